"""Influence Distillation speed: per-example gradients/s (exact and sketched) and JVP
embeddings/s against the same tnx LM's plain forward and forward+backward throughput, in one run.

  python -m benchmarks.selection_influence [--batch=64] [--steps=5] [--rounds=3] [--smoke]
  python -m benchmarks.selection --method=influence ...   (the same, through the dispatcher)

Rows (examples/s, each relative to 'forward+backward' of the same model and batch):
  forward            batched loss, no gradient (what Mid-PPL / RDS+ pay per example)
  forward+backward   gradient of the batch-mean loss (one training step's worth)
  per-example grads  vmap(grad) in lax.map chunks over all parameters or the MLP-down subset,
                     exact (P-vector per example), SRHT- or Rademacher-sketched to K
  JVP embeddings     jax.linearize through the first block, 2 tangents (R D values)
The paper's cost model (arXiv 2505.19051, Sec. 5) counts a JVP through the first blocks at about
one forward of those blocks per tangent and a landmark gradient at about 3 forwards; the ratios
here measure both on one machine.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks import common
from tnx.models.lm import LMConfig
from tnx.selection import influence as idl
from tnx.selection.influence import lm as lm_lib
from tnx.selection.influence import minitulu
from tnx.train import steps

SIZES = ((64, 2), (128, 4))   # (D, layers): the example's LM and a 4x larger one
SEQ_LEN = 40


def _model(d: int, layers: int, seed: int = 0):
  lm = LMConfig(vocab_size=256, d_model=d, n_layers=layers, n_heads=4)
  graphdef, _, _ = steps.abstract_model(lm, seed)
  state = jax.jit(steps.init_state_fn(lm, optax.identity(), seed))()
  return lm, graphdef, state["params"], state["rest"]


def _paths(graphdef, params, rest, batch: int, sketch_dim: int) -> dict[str, Any]:
  """name -> function of the batch (each processes `batch` examples per call)."""
  loss = lm_lib.example_loss(graphdef, rest)

  def mean_loss(p, b):
    total, weight, _ = steps.token_losses(graphdef, p, rest, b)
    return total / jnp.maximum(weight, 1.0)

  fwd = jax.jit(mean_loss)
  fwd_bwd = jax.jit(jax.grad(mean_loss))
  model_state = nnx.state(nnx.merge(graphdef, params, rest), nnx.Param)
  down = idl.ParamSubset(params, idl.subset_mask_from_filter(model_state,
                                                             nnx.PathContains("down")))
  full = idl.ParamSubset(params)
  chunk = min(32, batch)
  paths = {"forward": lambda b: fwd(params, b), "forward+backward": lambda b: fwd_bwd(params, b)}
  for name, sub in (("all", full), ("down", down)):
    for kind in ("none", "srht", "rademacher"):
      if kind == "rademacher" and name == "all":
        continue  # a dense P x K sign matrix per chunk: far slower than the SRHT at this P
      sk = idl.make_sketch(kind, sub.size, min(sketch_dim, sub.size), seed=1)
      fn = idl.per_example_grad_fn(loss, sub, sketch=sk, chunk_size=chunk)
      label = f"per-example grads, {name} (P={sub.size:,}), " + (
          "exact" if kind == "none" else f"{kind} K={min(sketch_dim, sub.size)}")
      paths[label] = (lambda f: lambda b: f(params, b, None))(fn)
  prefix, feat = idl.lm_prefix_features(graphdef, params, rest, 1)
  tangents = idl.jvp.random_tangents(jax.random.key(0), prefix, 2)
  emb = idl.jvp_embedding_fn(feat, chunk_size=chunk)
  paths["JVP embeddings, 1 block, 2 tangents"] = lambda b: emb(prefix, tangents, b)
  return paths


def run(batch: int, steps_: int, rounds: int, sketch_dim: int,
        sizes: Sequence[tuple[int, int]] = SIZES) -> list[dict[str, Any]]:
  pool = minitulu.make_pool(batch, seed=0, seq_len=SEQ_LEN)
  b = {k: jnp.asarray(pool[k]) for k in lm_lib.FIELDS}
  rows = []
  for d, layers in sizes:
    _, graphdef, params, rest = _model(d, layers)
    paths = _paths(graphdef, params, rest, batch, sketch_dim)
    for fn in paths.values():
      common.block(fn(b))  # compile outside the timed rounds
    times: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(rounds):  # interleaved, so load changes on a shared machine hit all paths
      for name, fn in paths.items():
        times[name].append(common.time_fn(lambda fn=fn: fn(b), steps=steps_, warmup=0))
    base = batch / float(np.median(times["forward+backward"]))
    for name in paths:
      rate = batch / float(np.median(times[name]))
      rows.append(dict(model=f"D={d}, {layers} layers", path=name, batch=batch,
                       examples_per_s=rate, relative_to_fwd_bwd=rate / base))
  return rows


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=64, help="examples per call")
  p.add_argument("--steps", type=int, default=5, help="timed calls per round (median)")
  p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median of them)")
  p.add_argument("--sketch_dim", type=int, default=4096, help="K of the gradient sketches")
  p.add_argument("--smoke", action="store_true", help="one small model, one call: seconds")
  p.add_argument("--json", default="", help="also write the rows to this JSON file")
  a = p.parse_args(argv)
  if min(a.batch, a.steps, a.rounds, a.sketch_dim) < 1:
    raise ValueError(f"--batch, --steps, --rounds and --sketch_dim must be >= 1, got "
                     f"{a.batch}, {a.steps}, {a.rounds}, {a.sketch_dim}")
  if a.smoke:
    rows = run(8, 1, 1, 64, sizes=((16, 1),))
  else:
    rows = run(a.batch, a.steps, a.rounds, a.sketch_dim)
  print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; L = {SEQ_LEN}, "
        f"float32")
  common.print_table(["model", "path", "batch", "examples/s", "relative to fwd+bwd"],
                     [[r["model"], r["path"], r["batch"], r["examples_per_s"],
                       r["relative_to_fwd_bwd"]] for r in rows])
  if a.json:
    with open(a.json, "w") as f:
      json.dump(rows, f, indent=1)
  return rows


if __name__ == "__main__":
  main()
