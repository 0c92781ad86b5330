"""python -m tnx.train --config=lm[:smoke] [--config.a.b=v ...] [--resume [--resume_step=N]
[--allow_changes]]; --help lists every flag and config field.

Expected failures (a bad config, an unusable checkpoint, a non-finite loss) print one message
and exit 1 (2 for a bad command line); SIGTERM/SIGINT save the current step and exit 0.
"""

import sys

from tnx import sharding


def main(argv: list[str]) -> None:
  sharding.maybe_initialize_distributed()
  from tnx.train import checkpoint, config, resume, trainer
  try:
    cfg, _ = config.parse_args(argv)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)
  try:
    config.validate(cfg)
    summary = trainer.train(cfg)
  except (ValueError, checkpoint.CheckpointError, resume.NonFiniteError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  ev = summary.get("eval", {})
  if ev:
    print(f"final validation loss {ev['loss']:.4f}  bits/byte {ev['bits_per_byte']:.4f}")


if __name__ == "__main__":
  main(sys.argv[1:])
