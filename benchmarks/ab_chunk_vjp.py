"""A/B of the inner-gradient backward: JAX autodiff of `model.layer_grads` against the
written-out backward of `tnx.memory.chunk_vjp`, in one process.

    python -m benchmarks.ab_chunk_vjp                 # Titans / TTT-MLP C in {16, 64}, TNT
    python -m benchmarks.ab_chunk_vjp --rounds 3 --rows titans:16
    python -m benchmarks.ab_chunk_vjp --smoke

Every variant of a row is compiled once (the JAX caches are cleared in between, because the
switch is read while tracing), then the variants are timed in interleaved rounds: one
forward+backward call (jit(value_and_grad) of mean(y^2) with respect to all parameters) of
each variant per round. Reported: the median over rounds of each variant's time and of the
per-round ratio autodiff / variant (> 1: the variant is faster), and the forward-only time of
the autodiff variant (for the backward / forward ratio). "bound" is not a correct program: the
per-token gradients are cut off from the outer gradient (`jax.lax.stop_gradient`), the most
any backward of `layer_grads` can save.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import common
from benchmarks.memory import make_layer
from tnx.memory import chunk_step
from tnx.memory import model as mm
from tnx.tnt.config import TNTConfig
from tnx.tnt.layer import TNTMemory

VARIANTS = ("autodiff", "analytic", "bound")


@contextlib.contextmanager
def variant(name: str):
  """Patches the chunk step's choice of inner-gradient backward while tracing."""
  uses, grads = chunk_step.UpdateRule.uses_analytic_vjp, mm.layer_grads
  chunk_step.UpdateRule.uses_analytic_vjp = lambda self, cfg: name == "analytic"
  if name == "bound":
    mm.layer_grads = lambda *a, **kw: jax.lax.stop_gradient(grads(*a, **kw))
  jax.clear_caches()
  try:
    yield
  finally:
    chunk_step.UpdateRule.uses_analytic_vjp, mm.layer_grads = uses, grads


def build(row: str, smoke: bool):
  """(layer, input x [B, L, D]) of a row "titans:C", "ttt:C" or "tnt:C_L"."""
  kind, chunk = row.split(":")
  chunk = int(chunk)
  if kind == "tnt":  # the shape of benchmarks.tnt (d_model 64, 4 heads, MLP 2x), L = 2048
    d, length, b = (16, 64, 1) if smoke else (64, 2048, 1)
    cfg = TNTConfig(num_heads=2 if smoke else 4, global_chunk_size=32 if smoke else 2048,
                    local_chunk_sizes=(chunk,), shard_length=16 if smoke else 2048,
                    memory=mm.MemoryModelConfig(depth=2, expansion=2))
    layer = TNTMemory(d, cfg, rngs=nnx.Rngs(0))
  else:  # the shapes of benchmarks.memory: B = 2, L = 1024, D = 256, 4 heads
    d, length, b = (32, 64, 2) if smoke else (256, 1024, 2)
    layer = make_layer(kind, d, 2 if smoke else 4, chunk)[0]
  return layer, jax.random.normal(jax.random.PRNGKey(1), (b, length, d), jnp.float32)


def compile_row(layer, x, name: str, forward_only: bool = False):
  graphdef, params, rest = nnx.split(layer, nnx.Param, ...)
  loss = lambda p, x: jnp.mean(jnp.square(nnx.merge(graphdef, p, rest)(x)))
  with variant(name):
    fn = loss if forward_only else jax.value_and_grad(loss)
    compiled = jax.jit(fn).lower(params, x).compile()
  return lambda: compiled(params, x)


def run_row(row: str, rounds: int, smoke: bool) -> list:
  layer, x = build(row, smoke)
  fns = {name: compile_row(layer, x, name) for name in VARIANTS}
  forward = compile_row(layer, x, "autodiff", forward_only=True)
  for fn in list(fns.values()) + [forward]:  # warm-up
    common.block(fn())
  times = {name: [] for name in list(VARIANTS) + ["forward"]}
  for _ in range(rounds):
    for name, fn in list(fns.items()) + [("forward", forward)]:
      t0 = time.perf_counter()
      common.block(fn())
      times[name].append(time.perf_counter() - t0)
  t = {n: np.asarray(v) for n, v in times.items()}
  med = {n: 1e3 * float(np.median(v)) for n, v in t.items()}
  ratio = lambda n: float(np.median(t["autodiff"] / t[n]))
  return [row, rounds, med["forward"], med["autodiff"], med["analytic"], ratio("analytic"),
          med["bound"], ratio("bound"), med["autodiff"] / med["forward"],
          med["analytic"] / med["forward"]]


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--rows", default="titans:16,titans:64,ttt:16,ttt:64,tnt:16")
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--out", default="runs/benchmarks/ab_chunk_vjp.json")
  a = p.parse_args(argv)
  if a.smoke:
    a.rows, a.rounds = "titans:16,tnt:8", 1
  header = ["row", "rounds", "forward ms", "autodiff ms", "analytic ms", "autodiff/analytic",
            "bound ms", "autodiff/bound", "autodiff fwd+bwd / fwd", "analytic fwd+bwd / fwd"]
  rows = []
  for row in a.rows.split(","):
    rows.append(run_row(row, a.rounds, a.smoke))
    print("  " + ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in rows[-1]),
          flush=True)
  common.print_table(header, rows)
  common.write_json(a.out, {"rows": [dict(zip(header, r)) for r in rows], "args": vars(a)})
  return rows


if __name__ == "__main__":
  main()
