"""XMAS trajectory extraction speed: examples/s of the proxy's plain forward pass against the
same forward with attention capture (sow), cross-modal blocks and their SVDs, in one run.

  python -m benchmarks.selection_xmas [--batch=64] [--steps=10] [--rounds=5] [--json=PATH]
  python -m benchmarks.selection --method=xmas ...      (the same, through the dispatcher)

Rows per proxy size: 'forward' (logits only), 'capture' (sown attention reduced to the
layer-summed blocks, no SVD), 'extract' (blocks + exact SVD, top-K values: what one
checkpoint of tnx.selection.xmas.trajectory costs; XLA drops the output head it does not
need), 'forward + extract' (logits and top-K values from one pass: the cost capture and SVD
add to a full forward), for both attention orientations. The overhead column is relative to
'forward' of the same model and batch (goal: under 25%).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import common
from tnx.selection.xmas import attention, data, model, trajectory

SIZES = ((32, 2), (64, 2))   # (D, layers): the example's proxy and the paper-plan proxy


def _fns(graphdef, cfg: trajectory.ExtractConfig):
  def forward(states, batch):
    return trajectory.default_apply(nnx.merge(graphdef, *states), batch)

  def blocks(states, batch):
    layers = trajectory.capture(graphdef, states, batch)
    masks = {k: batch[k] for k in trajectory.MASK_KEYS}
    return jax.vmap(lambda lay, m: jnp.sum(attention.cross_modal_block(
        lay, m["text_mask"], m["image_mask"], m["token_mask"], mode=cfg.mode,
        n_image=cfg.n_image)))(layers, masks)

  def forward_and_extract(states, batch):   # logits and the top-K values from one pass
    model = nnx.merge(graphdef, *states)
    model.set_attributes(sow_attention=True)
    logits, sown = nnx.capture(trajectory.default_apply, nnx.Intermediate)(model, batch)
    layers = attention.captured_layers(sown)
    masks = {k: batch[k] for k in trajectory.MASK_KEYS}
    return logits, jax.vmap(lambda lay, m: trajectory.example_values(lay, m, cfg))(layers,
                                                                                  masks)

  return (jax.jit(forward), jax.jit(blocks), trajectory.make_batch_fn(graphdef, cfg),
          jax.jit(forward_and_extract))


def run(batch: int, steps: int, rounds: int) -> list[dict[str, Any]]:
  dcfg = data.ShapesVQAConfig()
  pool = data.generate(0, batch, dcfg)
  keys = ("tokens", "image") + trajectory.MASK_KEYS
  b = {k: jnp.asarray(pool[k][:batch]) for k in keys}
  rows = []
  for d, layers in SIZES:
    graphdef, params, rest = model.init(model.for_shapes_vqa(dcfg, d_model=d, n_layers=layers),
                                        0)
    states = (params, rest)
    timed = {}
    for mode in attention.MODES:
      forward, blocks, extract, both = _fns(graphdef, trajectory.ExtractConfig(
          mode=mode, batch_size=batch))
      timed.setdefault("forward", forward)
      timed[f"capture ({mode})"], timed[f"extract ({mode})"] = blocks, extract
      timed[f"forward + extract ({mode})"] = both
    # Interleaved rounds so that load changes on a shared machine hit every path alike.
    samples = {name: [] for name in timed}
    for _ in range(rounds):
      for name, fn in timed.items():
        samples[name].append(common.time_fn(lambda fn=fn: fn(states, b), steps=steps,
                                            warmup=1))
    sec = {name: float(np.median(v)) for name, v in samples.items()}
    for name in timed:
      rows.append({"model": f"D={d}, {layers} layers", "path": name, "batch": batch,
                   "examples_per_s": batch / sec[name],
                   "overhead_pct": 100 * (sec[name] / sec["forward"] - 1)})
  return rows


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=64, help="examples per batch")
  p.add_argument("--steps", type=int, default=10, help="timed calls per round (median)")
  p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median of them)")
  p.add_argument("--json", default="", help="also write the rows to this JSON file")
  a = p.parse_args(argv)
  if min(a.batch, a.steps, a.rounds) < 1:
    raise ValueError(f"--batch, --steps and --rounds must be >= 1, got {a.batch}, {a.steps}, "
                     f"{a.rounds}")
  rows = run(a.batch, a.steps, a.rounds)
  print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; L = "
        f"{data.ShapesVQAConfig().seq_len}, N_I = {data.N_IMAGE_TOKENS}, K = 5")
  common.print_table(["model", "path", "batch", "examples/s", "overhead vs forward (%)"],
                     [[r["model"], r["path"], r["batch"], r["examples_per_s"],
                       r["overhead_pct"]] for r in rows])
  if a.json:
    common.write_json(a.json, rows)
  return rows


if __name__ == "__main__":
  main()
