"""python -m tnx.train --config=lm[:smoke] [--config.a.b=v ...] [--resume]"""

import sys

from tnx import sharding


def main(argv: list[str]) -> None:
  sharding.maybe_initialize_distributed()
  from tnx.train import config, trainer
  cfg, _ = config.parse_args(argv)
  summary = trainer.train(cfg)
  ev = summary.get("eval", {})
  if ev:
    print(f"final validation loss {ev['loss']:.4f}  bits/byte {ev['bits_per_byte']:.4f}")


if __name__ == "__main__":
  main(sys.argv[1:])
