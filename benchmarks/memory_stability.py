"""Numerically stable ranges of the memory primitive: the largest inner learning rate at which
the inner loop stays bounded, per memory family and chunk size, with and without key
normalization; and the bfloat16 error against float32.

    python -m benchmarks.memory_stability            # B=2, H=4, K=32, L=512 (minutes on CPU)
    python -m benchmarks.memory_stability --smoke    # seconds

Inputs are what the layers feed the primitive at initialization: unit-norm q and k (per head,
L2-normalized as the layers do; "raw keys" rows use unit-normal entries, |k|^2 ~ K), values
N(0, 1), gates at the layers' initial biases (Titans: momentum decay sigmoid(2) = 0.88, forget
sigmoid(-4) = 0.018; ATLAS: retention sigmoid(5), momentum decay sigmoid(2.2), window gates
sigmoid(3)), a constant lr. A run counts as stable when every output is finite and
max |o| <= 100 max |v| over the whole sequence (a diverging inner loop grows exponentially and
passes that bound long before it overflows). The table lists, on the grid
lr in {10^(-3 + i/4)}, the largest lr of an unbroken stable range starting at the bottom.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from tnx.memory import chunked
from tnx.memory import model as mm

FAMILIES = {
    # name: (memory config, rule, gate logits: momentum decay, retention, window gate)
    "titans (MLP 4x, momentum, forget)": (
        mm.MemoryModelConfig(), chunked.UpdateRule(optimizer="momentum"), (2.0, 4.0, None)),
    "titans / TNT (MLP 4x, no gates)": (mm.MemoryModelConfig(), chunked.UpdateRule(),
                                        (None, None, None)),
    "linear memory (delta rule)": (mm.MemoryModelConfig(depth=1), chunked.UpdateRule(),
                                   (None, None, None)),
    "ttt-linear (LN residual)": (
        mm.MemoryModelConfig(depth=1, ln_residual=True, init_scale=0.16), chunked.UpdateRule(),
        (None, None, None)),
    "ttt-mlp (LN residual)": (
        mm.MemoryModelConfig(depth=2, ln_residual=True, init_scale=0.16), chunked.UpdateRule(),
        (None, None, None)),
    "omeganet (MLP, window 4, gd)": (
        mm.MemoryModelConfig.from_kind("mlp"),
        chunked.UpdateRule(window=4, step_placement="outside"), (None, 5.0, 3.0)),
    "atlas (MLP, window 4, muon)": (
        mm.MemoryModelConfig.from_kind("mlp"),
        chunked.UpdateRule(window=4, optimizer="muon", step_placement="outside"),
        (2.2, 5.0, 3.0)),
}
BF16_LR = 0.001
RAW_KEYS = ("titans (MLP 4x, momentum, forget)", "linear memory (delta rule)")


def _inputs(b, h, length, k, normalize, window, logits, dtype):
  ks = jax.random.split(jax.random.PRNGKey(0), 3)
  q, kk, v = (jax.random.normal(key, (b, h, length, k), jnp.float32) for key in ks)
  if normalize:
    q, kk = (x / jnp.linalg.norm(x, axis=-1, keepdims=True) for x in (q, kk))
  lead = (b, h, length)
  z_mom, z_ret, z_gate = logits
  gates = {}
  if z_mom is not None:
    gates["log_mom_decay"] = jnp.full(lead, jax.nn.log_sigmoid(z_mom), dtype)
  if z_ret is not None:
    gates["log_retention"] = jnp.full(lead, jax.nn.log_sigmoid(z_ret), dtype)
  if z_gate is not None:
    gates["window_gate"] = jnp.full(lead + (window,), jax.nn.sigmoid(z_gate), dtype)
  return q.astype(dtype), kk.astype(dtype), v.astype(dtype), gates


def _runner(cfg, rule, chunk, b, h, length, k, normalize, logits, dtype=jnp.float32):
  q, kk, v, gates = _inputs(b, h, length, k, normalize, rule.window, logits, dtype)
  # Drawn in float32 and cast: random.normal draws different numbers in bfloat16.
  state0 = jax.tree.map(lambda x: x.astype(dtype),
                        mm.init_state(cfg, jax.random.PRNGKey(1), k, h, jnp.float32))
  ln = mm.init_ln(k, h, dtype) if cfg.ln_residual else None

  @jax.jit
  def run(lr):
    lr_arr = jnp.full(q.shape[:3], lr, dtype)
    return chunked.chunked_memory(cfg, state0, q, kk, v, lr_arr, chunk_size=chunk, rule=rule,
                                  ln=ln, **gates)[0]

  return run, float(jnp.max(jnp.abs(v)))


def largest_stable_lr(run, v_max, grid):
  """(largest lr of the stable prefix of the grid, first unstable lr or None)."""
  best = None
  for lr in grid:
    o = np.asarray(run(lr), np.float32)
    if not (np.all(np.isfinite(o)) and np.max(np.abs(o)) <= 100.0 * v_max):
      return best, lr
    best = lr
  return best, None


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--smoke", action="store_true", help="tiny shapes, runs in seconds")
  p.add_argument("--chunks", default="1,16,64")
  p.add_argument("--length", type=int, default=512)
  p.add_argument("--heads", type=int, default=4)
  p.add_argument("--head_dim", type=int, default=32)
  p.add_argument("--out", default="runs/benchmarks/memory_stability.json")
  a = p.parse_args(argv)
  families = list(FAMILIES)
  if a.smoke:
    a.chunks, a.length, a.heads, a.head_dim = "4", 32, 2, 8
    families = families[:2]
  chunks = [int(c) for c in a.chunks.split(",")]
  grid = [float(10 ** (-3 + i / 4)) for i in range(19)]  # 1e-3 ... ~30
  shape = (2, a.heads, a.length, a.head_dim)
  rows = []
  cases = [(f, True) for f in families] + [(f, False) for f in RAW_KEYS if f in families]
  for name, normalize in cases:
    cfg, rule, logits = FAMILIES[name]
    for chunk in chunks:
      run, v_max = _runner(cfg, rule, chunk, *shape, normalize, logits)
      best, first_bad = largest_stable_lr(run, v_max, grid)
      rows.append([name, "unit" if normalize else "raw", chunk,
                   float("nan") if best is None else best,
                   float("nan") if first_bad is None else first_bad])
      print("  " + ", ".join(str(x) for x in rows[-1]), flush=True)
  table = common.print_table(["memory", "keys", "C", "largest stable lr", "first unstable lr"],
                             rows)
  # bfloat16 against float32 (Titans, momentum and forget, at lr 0.001: inside the stable
  # range for every C above), same inputs and initial state: relative error of o.
  cfg, rule, logits = FAMILIES["titans (MLP 4x, momentum, forget)"]
  errors = []
  for chunk in chunks:
    ref, _ = _runner(cfg, rule, chunk, *shape, True, logits)
    low, _ = _runner(cfg, rule, chunk, *shape, True, logits, dtype=jnp.bfloat16)
    o32, o16 = np.asarray(ref(BF16_LR)), np.asarray(low(BF16_LR), np.float32)
    err = o16 - o32
    errors.append([chunk, float(np.max(np.abs(err)) / np.max(np.abs(o32))),
                   float(np.sqrt(np.mean(err**2) / np.mean(o32**2)))])
  table_bf16 = common.print_table(["C", "bf16 max rel. error of o", "bf16 rms rel. error"],
                                  errors)
  common.write_json(a.out, {"stable": rows, "bf16": errors, "args": vars(a)})
  return table, table_bf16


if __name__ == "__main__":
  main()
