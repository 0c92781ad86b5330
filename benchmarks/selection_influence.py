"""Influence Distillation speed: per-example gradients/s (exact and sketched) and JVP
embeddings/s against the same tnx LM's plain forward and forward+backward throughput, in one run.

  python -m benchmarks.selection_influence [--batch=64] [--steps=3] [--rounds=2] [--smoke]
  python -m benchmarks.selection --method=influence ...   (the same, through the dispatcher)

Rows (examples/s, each relative to 'forward+backward' of the same model and batch):
  forward            batched loss, no gradient (what Mid-PPL / RDS+ pay per example)
  forward+backward   gradient of the batch-mean loss (one training step's worth)
  per-example grads  vmap(grad) in lax.map chunks over all parameters or the MLP-down subset,
                     exact (P-vector per example), SRHT-sketched to K, and (small P x K only)
                     Rademacher-sketched
  forward, first block only   the JVP's primal alone (embedding, block 1, final norm)
  JVP embeddings     jax.linearize through the first block, 2 tangents (R D values)
The paper's cost model (arXiv 2505.19051, Sec. 5) counts a JVP through the first blocks at about
one forward of those blocks per tangent and a landmark gradient at about 3 forwards; the ratios
here measure both on one machine.
"""

from __future__ import annotations

import argparse
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


def _paths(graphdef, params, rest, batch: int, sketch_dim: int, rademacher_dim: int
           ) -> dict[str, Any]:
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
  sketches = [("all", full, "none", 0), ("all", full, "srht", sketch_dim),
              ("down", down, "none", 0), ("down", down, "srht", sketch_dim)]
  if down.size * rademacher_dim <= 2**25:  # a dense P x K sign matrix is drawn per chunk
    sketches.append(("down", down, "rademacher", rademacher_dim))
  for name, sub, kind, dim in sketches:
    dim = min(dim, sub.size)
    fn = idl.per_example_grad_fn(loss, sub, sketch=idl.make_sketch(kind, sub.size, dim or 1,
                                                                  seed=1), chunk_size=chunk)
    label = f"per-example grads, {name} (P={sub.size:,}), " + (
        "exact" if kind == "none" else f"{kind} K={dim}")
    paths[label] = (lambda f: lambda b: f(params, b, None))(fn)
  prefix, feat = idl.lm_prefix_features(graphdef, params, rest, 1)
  paths["forward, first block only"] = (lambda f: lambda b: f(prefix, b))(
      idl.example_mapper(feat, chunk_size=chunk))
  tangents = idl.jvp.random_tangents(jax.random.key(0), prefix, 2)
  emb = idl.jvp_embedding_fn(feat, chunk_size=chunk)
  paths["JVP embeddings, 1 block, 2 tangents"] = lambda b: emb(prefix, tangents, b)
  return paths


def run(batch: int, steps_: int, rounds: int, sketch_dim: int, rademacher_dim: int,
        sizes: Sequence[tuple[int, int]] = SIZES) -> list[dict[str, Any]]:
  pool = minitulu.make_pool(batch, seed=0, seq_len=SEQ_LEN)
  b = {k: jnp.asarray(pool[k]) for k in lm_lib.FIELDS}
  rows = []
  for d, layers in sizes:
    _, graphdef, params, rest = _model(d, layers)
    paths = _paths(graphdef, params, rest, batch, sketch_dim, rademacher_dim)
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
  p.add_argument("--steps", type=int, default=3, help="timed calls per round (median)")
  p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (median of them)")
  p.add_argument("--sketch_dim", type=int, default=4096, help="K of the SRHT sketches")
  p.add_argument("--rademacher_dim", type=int, default=512,
                 help="K of the dense Rademacher sketch (run only while P * K <= 2^25)")
  p.add_argument("--sizes", default="64x2,128x4", help="models as DxLAYERS, comma-separated")
  p.add_argument("--smoke", action="store_true", help="one small model, one call: seconds")
  p.add_argument("--json", default="", help="also write the rows to this JSON file")
  a = p.parse_args(argv)
  if min(a.batch, a.steps, a.rounds, a.sketch_dim, a.rademacher_dim) < 1:
    raise ValueError(f"--batch, --steps, --rounds, --sketch_dim and --rademacher_dim must be "
                     f">= 1, got {a.batch}, {a.steps}, {a.rounds}, {a.sketch_dim}, "
                     f"{a.rademacher_dim}")
  if a.smoke:
    rows = run(8, 1, 1, 64, 16, sizes=((16, 1),))
  else:
    sizes = [tuple(int(v) for v in t.split("x")) for t in a.sizes.split(",") if t]
    rows = run(a.batch, a.steps, a.rounds, a.sketch_dim, a.rademacher_dim, sizes)
  print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; L = {SEQ_LEN}, "
        f"float32")
  common.print_table(["model", "path", "batch", "examples/s", "relative to fwd+bwd"],
                     [[r["model"], r["path"], r["batch"], r["examples_per_s"],
                       r["relative_to_fwd_bwd"]] for r in rows])
  if a.json:
    common.write_json(a.json, rows)
  return rows


if __name__ == "__main__":
  main()
