"""tnx.mixing speed: the K-domain loop with weight updates against fixed weights, and Monte
Carlo runs per second with vmap against a Python loop over seeds.

  python -m benchmarks.mixing                        # a few minutes on a 2-core CPU
  python -m benchmarks.mixing --steps 200 --seeds 4 --repeats 3   # quicker

Loop rows: one jitted `Loop.run` of `steps` steps (B = 32, K = 2) timed after compilation
(median of `--repeats`, the variants interleaved so machine load affects all alike); 'fixed'
is Uniform (no statistics, no updates), 'updates' is FGLS/ERMA + VA with the given update
period tau, validation subset and probe size.
Monte Carlo rows: N seeds of the Fig. 1 problem as one vmapped program versus N calls of the
jitted single run; both timed after compilation, compile time reported separately.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks.common import block, print_table, time_fn
from tnx.mixing import linreg, tasks
from tnx.mixing import loop as L
from tnx.mixing import montecarlo as MC


def loop_rows(steps: int, repeats: int) -> list[list]:
  problem = linreg.make_problem(10, (1.0, 100.0), reading="R1", n_train=2000, n_val=500)
  _, lin_train, lin_val = linreg.sample(0, problem)
  dig_train, dig_val, _ = tasks.digits_domains(0, noise=(0.0, 0.8))
  loss_mlp, params_mlp, _ = L.nnx_loss(tasks.MLP(64, 128, 10, rngs=nnx.Rngs(0)),
                                       tasks.cross_entropy)
  models = {"linreg d=10": (linreg.squared_loss, jnp.zeros(10, jnp.float32), lin_train, lin_val,
                            "fgls", optax.sgd(0.01)),
            "digits MLP 64-128-10": (loss_mlp, params_mlp, dig_train, dig_val, "erma",
                                     optax.adam(1e-3))}
  pi = jnp.array([0.5, 0.5], jnp.float32)
  variants = [("fixed", "none", "pi", 10, 0, 32)] + [
      ("updates", None, "va", tau, val, probe)
      for tau, val, probe in ((10, 0, 32), (10, 32, 8), (50, 0, 32), (50, 32, 8))]
  rows = []
  for model, (loss_fn, params, train, val, rule, tx) in models.items():
    runs = []
    for label, lrule, srule, tau, val_size, probe in variants:
      cfg = L.MixingConfig(batch_size=32, loss_rule=lrule or rule, sampling_rule=srule,
                           update_every=tau, val_size=val_size, probe_size=probe)
      loop = L.Loop(loss_fn, tx, cfg)
      run = jax.jit(lambda key, loop=loop: loop.run(key, params, train, val, pi, steps=steps))
      t0 = time.perf_counter()
      block(run(jax.random.key(0)))
      runs.append((label, cfg, run, time.perf_counter() - t0))
    # interleaved repeats: load changes on a shared machine hit every variant alike
    times = [[] for _ in runs]
    for r in range(repeats):
      for i, (_, _, run, _) in enumerate(runs):
        times[i].append(time_fn(lambda run=run, r=r: run(jax.random.key(r + 1)), steps=1,
                                warmup=0))
    base = steps / float(np.median(times[0]))
    for (label, cfg, _, compile_s), ts in zip(runs, times):
      sps = steps / float(np.median(ts))
      rows.append([model, f"{label} ({cfg.loss_rule}+{cfg.sampling_rule})", cfg.update_every,
                   cfg.val_size or "all", cfg.probe_size if cfg.sampling_rule == "va" else "-",
                   round(sps), f"{100 * (1 - sps / base):.1f}%" if label != "fixed" else "-",
                   compile_s])
  return rows


def mc_rows(steps: int, seeds: int) -> list[list]:
  problem = linreg.make_problem(10, (1.0, 100.0), reading="R1", n_train=2000, n_val=500)
  inputs = MC.stack([linreg.sample(s, problem) for s in range(seeds)])
  pi = jnp.asarray(problem.pi, jnp.float32)
  cfg = L.MixingConfig(batch_size=32, loss_rule="fgls", sampling_rule="va")

  def fn(key, inp):
    theta_star, train, val = inp
    loop = L.Loop(linreg.squared_loss, optax.sgd(0.01), cfg,
                  lambda p: {"err": jnp.sum((p - theta_star) ** 2)})
    return loop.run(key, jnp.zeros(10, jnp.float32), train, val, pi, steps=steps)[1]["err"]

  keys = MC.seed_keys(seeds)
  rows = []
  for label, runner in (("vmap (one program)", MC.run_vmapped),
                        ("Python loop over seeds", MC.run_loop)):
    t0 = time.perf_counter()
    block(runner(fn, keys, inputs=inputs))
    first = time.perf_counter() - t0
    sec = time_fn(lambda runner=runner: runner(fn, keys, inputs=inputs), steps=2, warmup=0)
    rows.append([label, seeds, steps, seeds / sec, first - sec, sec])
  return rows


def main(argv: list[str] | None = None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--steps", type=int, default=2000)
  ap.add_argument("--repeats", type=int, default=7)
  ap.add_argument("--seeds", type=int, default=16)
  args = ap.parse_args(argv)
  print(f"jax {jax.__version__}, {jax.devices()[0].platform}, float32\n")
  print_table(["model", "loop", "tau", "val / domain", "probe / domain", "steps/s",
               "slower than fixed", "compile s"], loop_rows(args.steps, args.repeats))
  print()
  print_table(["Monte Carlo", "seeds", "steps", "runs/s", "compile s", "wall s (timed)"],
              mc_rows(args.steps, args.seeds))


if __name__ == "__main__":
  main()
