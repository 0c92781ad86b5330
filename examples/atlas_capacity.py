"""Associative-memory capacity of the ATLAS memories without outer training.

N random key/value pairs (d_k = d_v = 8, keys and values i.i.d. N(0, 1/d)) are written into a
memory from W = 0 by the Omega rule itself (`tnx.memory.chunked` with a window): the N pairs are
repeated for `epochs` passes, the window c and chunk size b set the update:
  * c = b = N: each chunk is one full-batch GD step on all pairs (its limit is the
    min-norm least-squares fit, also computed in closed form for linear-in-W memories);
  * b = 1, c < N: the exact per-token Omega rule with step 1 / (2 sum_window ||phi||^2)
    (c = 1 is the delta rule = cyclic Kaczmarz projections).
A pair counts as recalled when max_j |M(k)_j - v_j| < tol. Memories: linear, linear + phi_2
(Kronecker degree-2 features, D = 73, rank <= C(10, 2) = 45), 2-layer MLP (hidden 32), MLP +
phi_2. A last table compares GD with the Muon update (NS-5) on ill-conditioned keys.

  python -m examples.atlas_capacity            # full run (a few minutes on 2 CPU cores)
  python -m examples.atlas_capacity --smoke    # seconds
  python -m examples.atlas_capacity --docs     # also copy the figure into docs/

Writes results.md (the tables), results.json and atlas_capacity.png under config.workdir.
Config: tnx/configs/atlas_capacity.py.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from tnx.memory import chunked
from tnx.memory import model as mm
from tnx.memory.atlas import features
from tnx.train import config as config_lib
from tnx.train import paths

jax.config.update("jax_enable_x64", True)
F64 = jnp.float64
D = 8
DOCS = Path(__file__).resolve().parents[1] / "docs"


def pairs(n: int, seed: int):
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  return (jax.random.normal(k1, (n, D), F64) / np.sqrt(D),
          jax.random.normal(k2, (n, D), F64) / np.sqrt(D))


def phi(x, poly: bool):
  return features.poly_features(x, jnp.asarray([1.0, 1.0, 1.0], F64)) if poly else x


def store(kind: str, poly: bool, keys, vals, *, window: int, chunk: int, epochs: int,
          optimizer: str = "gd", lr_scale: float = 1.0, seed: int = 0):
  """Writes the pairs with the Omega rule and returns the recall errors [N] (max abs)."""
  n = keys.shape[0]
  z = phi(keys, poly)
  mcfg = mm.MemoryModelConfig.from_kind(kind, expansion=4, activation="tanh")
  s0 = mm.init_state(mcfg, jax.random.PRNGKey(seed), z.shape[-1], 1, F64, out_dim=D)
  if kind == "linear":
    s0 = ({"w": jnp.zeros_like(s0[0]["w"])},)
  else:  # a small random first layer, zero read-out: M = 0 at the start
    s0 = (s0[0], {"w": jnp.zeros_like(s0[1]["w"])})
  sq = jnp.sum(z**2, axis=-1)
  if window >= n:  # full batch: step 1 / (2 N lambda_max) per token of the chunk
    lam = float(np.linalg.eigvalsh(np.asarray(z @ z.T))[-1])
    eta = jnp.full((n * epochs,), lr_scale / (2.0 * n * lam), F64)
  else:            # per-token Omega: 1 / (2 * sum of ||phi||^2 over the window)
    win = jnp.stack([jnp.roll(sq, j) for j in range(window)]).sum(0)
    eta = jnp.tile(lr_scale / (2.0 * win), epochs)
  tile = lambda x: jnp.tile(x, (epochs, 1))[None, None]
  # Momentum optimizers run with no momentum decay given: decay 0 (S_t = u_t).
  rule = chunked.UpdateRule(window=window, optimizer=optimizer, step_placement="outside")
  fn = jax.jit(functools.partial(chunked.chunked_memory, mcfg, chunk_size=chunk, rule=rule,
                                 remat_group=0))
  _, carry = fn(s0, tile(z), tile(z), tile(vals), eta[None, None])
  w = jax.tree.map(lambda x: x[0, 0], carry.weights)
  return np.asarray(jnp.max(jnp.abs(mm.apply(mcfg, w, z) - vals), axis=-1))


def lstsq_errors(poly: bool, keys, vals):
  """The GD limit from W = 0 for a linear-in-W memory: the min-norm least-squares fit."""
  z = np.asarray(phi(keys, poly))
  w = np.linalg.pinv(z) @ np.asarray(vals)
  return np.max(np.abs(z @ w - np.asarray(vals)), axis=-1)


def capacity_table(ns, epochs, tol, seeds):
  rows = {}
  specs = [("linear", "linear", False), ("linear+phi2", "linear", True), ("mlp", "mlp", False),
           ("mlp+phi2", "mlp", True)]
  for name, kind, poly in specs:
    recalled, exact = [], []
    for n in ns:
      r, e = 0.0, 0.0
      for seed in seeds:
        keys, vals = pairs(n, seed)
        r += np.sum(store(kind, poly, keys, vals, window=n, chunk=n, epochs=epochs,
                          seed=seed) < tol) / len(seeds)
        if kind == "linear":
          e += np.sum(lstsq_errors(poly, keys, vals) < 1e-6) / len(seeds)
      recalled.append(r)
      exact.append(e if kind == "linear" else np.nan)
    rows[name] = (recalled, exact)
  return rows


def window_table(n, windows, epochs, tol, seed=0):
  keys, vals = pairs(n, seed)
  out = {}
  for c in windows:
    err = store("linear", True, keys, vals, window=c, chunk=1 if c < n else n, epochs=epochs)
    out[c] = (int(np.sum(err < tol)), float(np.median(err)))
  return out


def muon_table(steps_list, seed=0):
  """Linear memory, N = 8 keys with condition number 100; loss after k full-batch steps."""
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  u, _ = jnp.linalg.qr(jax.random.normal(k1, (D, D), F64))
  v, _ = jnp.linalg.qr(jax.random.normal(k2, (D, D), F64))
  keys = u @ jnp.diag(jnp.logspace(0, -2, D, dtype=F64)) @ v.T
  vals = jax.random.normal(k3, (D, D), F64) / np.sqrt(D)
  res = {}
  for opt_name, scale in (("gd", 1.0), ("muon", 0.02)):
    losses = []
    for steps in steps_list:
      if opt_name == "gd":
        err = store("linear", False, keys, vals, window=D, chunk=D, epochs=steps)
      else:  # NS output has unit-scale singular values: step size is absolute
        err = store_muon(keys, vals, steps, scale)
      losses.append(float(np.mean(err)))
    res[opt_name] = losses
  return res


def store_muon(keys, vals, steps, eta):
  mcfg = mm.MemoryModelConfig.from_kind("linear")
  rule = chunked.UpdateRule(window=D, optimizer="muon", step_placement="outside")
  n = keys.shape[0]
  tile = lambda x: jnp.tile(x, (steps, 1))[None, None]
  # Chunk = N and gradients summed over the window: one Muon step per chunk on its last token
  # only (eta = 0 elsewhere), theta = 0 (no momentum): W <- W - eta NS(grad L(W)).
  mask = jnp.tile(jnp.eye(n, dtype=F64)[-1], steps)
  fn = jax.jit(functools.partial(chunked.chunked_memory, mcfg, chunk_size=n, rule=rule,
                                 remat_group=0))
  _, carry = fn(({"w": jnp.zeros((1, D, D), F64)},), tile(keys), tile(keys), tile(vals),
                (eta * mask)[None, None])
  w = carry.weights[0]["w"][0, 0]
  return np.asarray(jnp.max(jnp.abs(keys @ w - vals), axis=-1))


def plot(ns, rows, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, (rec, _) in rows.items():
    ax.plot(ns, rec, marker="o", label=name)
  ax.plot(ns, ns, "k:", lw=0.8, label="all recalled")
  for x, lab in ((8, "d_k = 8"), (45, "C(10,2) = 45")):
    ax.axvline(x, color="gray", ls="--", lw=0.6)
    ax.text(x, 1, lab, rotation=90, fontsize=7)
  ax.set_xlabel("stored pairs N")
  ax.set_ylabel("pairs recalled")
  ax.set_title("Memory capacity, d_k = d_v = 8 (Omega rule, full-batch GD)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  paths.save_figure(fig, path, dpi=120)
  plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
  c, _ = config_lib.parse_args(sys.argv[1:] if argv is None else argv, default="atlas_capacity")
  out = paths.path(c.workdir)
  out.mkdir(parents=True, exist_ok=True)
  t0 = time.time()
  ns, seeds, epochs = list(c.ns), list(c.seeds), c.epochs
  lines: list[str] = []
  rows = capacity_table(ns, epochs, c.tol, seeds)
  lines.append(f"pairs recalled (max abs err < {c.tol}) after {epochs} full-batch GD epochs, "
               f"mean over seeds {seeds}; [exact] = min-norm least-squares limit recalled to "
               "1e-6")
  lines.append("| memory | " + " | ".join(f"N={n}" for n in ns) + " |")
  lines.append("|---" * (len(ns) + 1) + "|")
  for name, (rec, exact) in rows.items():
    cells = [f"{r:g}" + ("" if np.isnan(e) else f" [{e:g}]") for r, e in zip(rec, exact)]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  lines.append(f"\nlinear+phi2, N={c.window_pairs}: window c (chunk 1, per-token Omega; c=N "
               f"full batch), {epochs} epochs -> (recalled, median error)")
  windows = window_table(c.window_pairs, list(c.windows), epochs, c.tol)
  for w, (r, med) in windows.items():
    lines.append(f"| c={w} | {r} | {med:.2e} |")
  lines.append("\nill-conditioned keys (cond 100), linear memory: mean recall error after k "
               "steps")
  muon = muon_table(list(c.muon_steps))
  for name, losses in muon.items():
    lines.append(f"| {name} | " + " | ".join(f"k={s}: {x:.3e}"
                                           for s, x in zip(c.muon_steps, losses)) + " |")
  text = "\n".join(lines)
  print(text)
  results = {
      "ns": ns, "epochs": epochs, "tol": c.tol,
      "capacity": {name: {"recalled": [float(r) for r in rec],
                          "exact_lstsq": [None if np.isnan(e) else float(e) for e in exact]}
                   for name, (rec, exact) in rows.items()},
      "windows": {str(w): {"recalled": r, "median_error": med}
                  for w, (r, med) in windows.items()},
      "muon": {"steps": list(c.muon_steps), **muon}, "seconds": time.time() - t0}
  paths.write_text(out / "results.md", text + "\n")
  paths.write_text(out / "results.json", json.dumps(results, indent=1))
  plot(ns, rows, out / "atlas_capacity.png")
  print(f"\ntotal {results['seconds']:.1f}s; results.md, results.json and atlas_capacity.png in "
        f"{out}")
  if c.docs:
    paths.copy_into([out / "atlas_capacity.png"], DOCS)
    print(f"copied atlas_capacity.png into {DOCS}")
  return results


if __name__ == "__main__":
  main()
