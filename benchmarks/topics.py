"""Synthetic Topics users: sampling and Parquet writing rate, memory, and fit time per pass.

  python -m benchmarks.topics                  # 10^5 and 10^6 users, fit steps (minutes)
  python -m benchmarks.topics --users 1e5,1e6,1e7
  python -m benchmarks.topics --json out.json

The mixture has the released model's size (T = 500 types, W = 4 weeks, K = 5 slots, |O| = 469
topics, random logits). Each (users, mode) row runs in a fresh subprocess, so its peak RSS is
that run's alone: 'sample' draws and discards the users, 'sample+parquet' also streams them to
a Parquet file (zstd). Fit: seconds per pass (epoch) over the query set, measured on a few
batches at the released query count (1,100,743 queries, batch 8,192 -> 135 steps per pass)
and on whole passes at the demo scale (|O| = 50, batch 4,096).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import print_table, time_fn, write_json
from tnx.privacy.topics import fit, model, storage
from tnx.privacy.topics.stats import TopicStatistics

T, W, K, O = 500, 4, 5, 469


def _mixture(num_types=T, num_topics=O) -> model.TypeMixture:
  rng = np.random.default_rng(0)
  return model.TypeMixture(jnp.asarray(rng.normal(0, 2.0, (num_types, W, K, num_topics)),
                                       jnp.float32))


def child(num_users: int, mode: str, chunk_users: int) -> dict:
  """One measurement (run in its own process)."""
  mix = _mixture()
  key = jax.random.PRNGKey(0)
  # Warm-up compiles the chunk sampler outside the timed region.
  next(model.sample_chunks(key, mix, chunk_users, chunk_users))
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "users.parquet")
    t0 = time.perf_counter()
    if mode == "sample":
      for _ in model.sample_chunks(key, mix, num_users, chunk_users):
        pass
      size = 0
    else:
      storage.sample_to_parquet(key, mix, np.arange(1, O + 1), num_users, path,
                                chunk_users=chunk_users)
      size = os.path.getsize(path)
    sec = time.perf_counter() - t0
  peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return {"users": num_users, "mode": mode, "seconds": sec, "users_per_s": num_users / sec,
          "peak_rss_mb": peak_mb, "file_mb": size / 2 ** 20}


def _run_child(num_users: int, mode: str, chunk_users: int) -> dict:
  out = subprocess.run([sys.executable, "-m", "benchmarks.topics", "--child", str(num_users),
                        "--mode", mode, "--chunk_users", str(chunk_users)],
                       capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def _queries(num_topics: int, rng) -> fit.Queries:
  stats = TopicStatistics(rng.random(num_topics) * 0.01,
                          np.triu(rng.random((num_topics, num_topics)) * 1e-4, 1),
                          rng.random((num_topics, num_topics)) * 1e-4)
  return fit.build_queries(stats, W)


def fit_rows(steps: int = 4) -> list[list]:
  rows = []
  rng = np.random.default_rng(0)
  tx = fit._adam(1.0)
  # Released scale: time `steps` batches of 8,192, scale to the 135 steps of one pass.
  full = _queries(O, rng)
  batch = 8192
  sub = jax.tree.map(lambda x: jnp.asarray(x[rng.permutation(len(full))[:steps * batch]]), full)
  mix = _mixture()
  state = tx.init(mix)
  run = lambda: fit._epochs(mix, state, jax.random.PRNGKey(0), 0, sub, tx=tx, batch_size=batch,
                            num_epochs=1)
  sec = time_fn(run, steps=2, warmup=1) / steps
  per_pass = -(-len(full) // batch)
  rows.append([f"released: T={T}, |O|={O}", len(full), batch, per_pass, sec * 1e3,
               sec * per_pass])
  # Demo scale: whole passes.
  for t in (8, 32, 64):
    demo = _queries(50, rng)
    mix = _mixture(t, 50)
    q = jax.tree.map(jnp.asarray, demo)
    state = tx.init(mix)
    run = lambda mix=mix, state=state, q=q: fit._epochs(mix, state, jax.random.PRNGKey(0), 0, q,
                                                        tx=tx, batch_size=4096, num_epochs=10)
    sec = time_fn(run, steps=2, warmup=1) / 10
    per_pass = -(-len(demo) // 4096)
    rows.append([f"demo: T={t}, |O|=50", len(demo), 4096, per_pass, sec / per_pass * 1e3, sec])
  return rows


def main(argv: list[str] | None = None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--users", default="1e5,1e6", help="comma-separated user counts")
  p.add_argument("--chunk_users", type=int, default=1 << 16)
  p.add_argument("--no_fit", action="store_true")
  p.add_argument("--json", default=None)
  p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
  p.add_argument("--mode", default="sample", help=argparse.SUPPRESS)
  a = p.parse_args(argv)
  if a.child is not None:
    print(json.dumps(child(a.child, a.mode, a.chunk_users)))
    return {}
  counts = [int(float(u)) for u in a.users.split(",")]
  results = [_run_child(n, mode, a.chunk_users) for n in counts
             for mode in ("sample", "sample+parquet")]
  print(f"\nSampling and writing: T={T}, W={W}, K={K}, |O|={O}, chunk {a.chunk_users} users, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
  rows = [[r["users"], r["mode"], r["seconds"], r["users_per_s"], r["peak_rss_mb"],
           r["file_mb"], 1e7 / r["users_per_s"] / 60] for r in results]
  sample_table = print_table(["users", "mode", "seconds", "users/s", "peak RSS MB", "file MB",
                              "10^7 users (min, extrapolated)"], rows)
  out = {"sampling": results, "sampling_table": sample_table}
  if not a.no_fit:
    print("\nFit: Adam steps of minibatch moment matching")
    out["fit_table"] = print_table(["setting", "queries", "batch", "steps/pass", "ms/step",
                                    "s/pass"], fit_rows())
  if a.json:
    write_json(a.json, out)
  return out


if __name__ == "__main__":
  main()
