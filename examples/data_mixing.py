"""Sampling weights vs loss weights (arXiv 2511.06913): Figs. 1-3 at CPU scale and an LM.

  python -m examples.data_mixing --experiment=fig1    # linear regression, R1 / R2 / control
  python -m examples.data_mixing --experiment=fig2    # logistic regression with label noise
  python -m examples.data_mixing --experiment=fig3    # MLP on sklearn digits, noisy domain
  python -m examples.data_mixing --experiment=lm      # byte LM, one corrupted stdlib domain
  python -m examples.data_mixing --experiment=fig1 --smoke
  python -m examples.data_mixing --experiment=fig1 --docs   # also copy into docs/

Each experiment compares the paper's 2 x 2 grid (Uniform, loss weights only, sampling weights
only, both) on the same seeds (common random numbers): one compiled program vmapped over
methods, seeds and (fig1) the step-size grid. Writes <workdir>/<experiment>/results.json,
results.md and PNG figures; with --docs (or --config.docs=True) the figures and table are
copied into docs/ as mixing_<experiment>*. Config: tnx/configs/data_mixing.py.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tnx.mixing import linreg, tasks  # noqa: E402
from tnx.mixing import loop as L  # noqa: E402
from tnx.mixing import montecarlo as MC  # noqa: E402
from tnx.train import config as config_lib  # noqa: E402

NAMES = {"uniform": "Uniform", "loss": "loss weights", "sampling": "VA sampling",
         "both": "both"}
COLORS = {"uniform": "tab:gray", "loss": "tab:blue", "sampling": "tab:orange",
          "both": "tab:green"}
STYLES = {"uniform": "-", "loss": "--", "sampling": "-.", "both": ":"}  # overlaps stay visible


def mix_config(cfg, loss_rule: str) -> L.MixingConfig:
  m = cfg.mix
  return L.MixingConfig(batch_size=m.batch_size, loss_rule=loss_rule, sampling_rule="va",
                        update_every=m.update_every, ema=m.ema, fgls_init=m.fgls_init,
                        erma_gamma1=m.erma_gamma1, erma_gamma2=m.erma_gamma2, erma_g=m.erma_g,
                        probe_size=m.probe_size, rounding=m.rounding)


@functools.lru_cache(maxsize=16)
def grid_fn(loss_fn, make_tx, init_fn, eval_fn, mcfg: L.MixingConfig, steps: int):
  """fn(key, inp, (value, switches)) for MC.run_vmapped; cached so that settings with equal
  shapes reuse one compiled program. inp holds 'train', 'val', 'pi' and task data."""
  def fn(key, inp, setting):
    value, switch = setting
    loop = L.Loop(loss_fn, make_tx(value, inp), mcfg, lambda p: eval_fn(p, inp))
    return loop.run(key, init_fn(inp), inp["train"], inp["val"], inp["pi"], steps=steps,
                    switches=switch)[1]
  return fn


def grid_runs(fn, inputs, seeds, base_seed, values=None):
  """Every method x seed (x value of `values`, passed to make_tx) in one jitted program.
  Returns traces with leading axes [V, M, N] (V omitted when values is None)."""
  sw = L.method_switches()
  m = len(L.METHODS)
  vals = jnp.zeros(1) if values is None else jnp.asarray(values)
  settings = (jnp.repeat(vals, m), jax.tree.map(lambda a: jnp.tile(a, len(vals)), sw))
  out = MC.run_vmapped(fn, MC.seed_keys(seeds, base_seed), settings, inputs=inputs)
  out = jax.tree.map(lambda a: np.asarray(a).reshape((len(vals), m) + a.shape[1:]), out)
  return jax.tree.map(lambda a: a[0], out) if values is None else out


def sgd_scaled(value, inp):
  """SGD with step value / sum_i pi_i C_i (inp['lr_scale'] = 1 / sum pi C)."""
  return optax.sgd(value * inp["lr_scale"])


def zeros_init(inp):
  return jnp.zeros(inp["train"].data["x"].shape[-1], inp["train"].data["x"].dtype)


def fig1_eval(p, inp):
  return {"err": jnp.sum((p - inp["theta"]) ** 2),
          "risk": linreg.excess_risk(p, inp["theta"], inp["cov"], inp["pi"])}


def fig2_eval(p, inp):
  return tasks.logistic_test_metrics(p, inp["test"], inp["pi"])


def final(x: np.ndarray, frac: float = 0.1) -> np.ndarray:
  """Mean over the last `frac` of rounds (axis -1 of [..., R])."""
  return x[..., -max(1, int(frac * x.shape[-1])):].mean(-1)


def band(ax, steps, y_NxR, name, log=False):
  mean, sd = y_NxR.mean(0), y_NxR.std(0)
  ax.plot(steps, mean, color=COLORS[name], ls=STYLES[name], lw=1.6, label=NAMES[name])
  lo = np.maximum(mean - sd, mean * 0.05) if log else mean - sd
  ax.fill_between(steps, lo, mean + sd, color=COLORS[name], alpha=0.15)


def weight_panels(axes, steps, w, b, batch, log_w=True):
  """w_2/w_1 for the loss-weight methods and b_1/B for the sampling methods."""
  for name in ("loss", "both"):
    i = L.METHODS.index(name)
    band(axes[0], steps, w[i, :, :, 1] / w[i, :, :, 0], name, log=log_w)
  axes[0].set(ylabel="w_2 / w_1", xlabel="step", yscale="log" if log_w else "linear")
  for name in ("sampling", "both"):
    i = L.METHODS.index(name)
    band(axes[1], steps, b[i, :, :, 0] / batch, name)
  axes[1].set(ylabel="b_1 / B", xlabel="step", ylim=(0, 1))
  for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


# --------------------------------------------------------------------------- Fig. 1
FIG1_SETTINGS = {"R1": ((1.0, 100.0), "R1"), "R2": ((1.0, 100.0), "R2"),
                 "control": ((1.0, 1.0), "R1")}


def fig1(cfg, out: str) -> dict[str, Any]:
  f = cfg.fig1
  mcfg = mix_config(cfg, "fgls")
  results: dict[str, Any] = {}
  for setting in config_lib.split_list(f.settings):
    c, reading = FIG1_SETTINGS[setting]
    problem = linreg.make_problem(f.d, c, reading=reading, n_train=f.n_train, n_val=f.n_val)
    pi = jnp.asarray(problem.pi)
    c_pi = float(np.sum(problem.pi * np.trace(problem.cov, axis1=1, axis2=2) / f.d))
    data = [linreg.sample(cfg.base_seed + s, problem) for s in range(cfg.seeds)]
    shared = {"pi": pi, "cov": jnp.asarray(problem.cov, pi.dtype),
              "lr_scale": jnp.asarray(1.0 / c_pi, pi.dtype)}
    inputs = MC.stack([{"theta": th, "train": tr, "val": va, **shared} for th, tr, va in data])
    fn = grid_fn(linreg.squared_loss, sgd_scaled, zeros_init, fig1_eval, mcfg, f.steps)
    tr = grid_runs(fn, inputs, cfg.seeds, cfg.base_seed, values=np.asarray(f.lr_grid))
    ref = linreg.reference_errors(problem)
    sig = jnp.asarray(problem.sigma2)
    exact = {k: float(np.mean([np.sum((np.asarray(linreg.weighted_ls(tr_, a)) - np.asarray(th))
                                      ** 2) for th, tr_, _ in data]))
             for k, a in (("ols", jnp.ones_like(sig)), ("gls", 1.0 / sig))}
    fin = final(tr["err"]).mean(-1)  # [V, M]
    best = fin.argmin(0)
    rows = {}
    steps = tr["step"][0, 0, 0]
    uniform_final = fin[best[0], 0]
    for i, name in enumerate(L.METHODS):
      j = best[i]
      err, risk = tr["err"][j, i], tr["risk"][j, i]
      curve = err.mean(0)
      below = np.flatnonzero(curve <= uniform_final)
      rows[name] = {"lr": float(f.lr_grid[j]), "err": float(final(err).mean()),
                    "err_sd": float(final(err).std()), "risk": float(final(risk).mean()),
                    "w_ratio": float((tr["w"][j, i, :, -1, 1] / tr["w"][j, i, :, -1, 0]).mean()),
                    "b1": float(tr["b"][j, i, :, -1, 0].mean()),
                    "b1_first": float(tr["b"][j, i, :, 0, 0].mean()),
                    "reach_uniform_final": int(steps[below[0]]) if below.size else None,
                    "err_by_lr": [float(v) for v in fin[:, i]]}
    results[setting] = {"c": list(c), "reading": reading, "sigma2": problem.sigma2.tolist(),
                        "reference": ref, "exact_mc": exact, "methods": rows}
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    for i, name in enumerate(L.METHODS):
      band(axes[0], steps, tr["err"][best[i], i], name, log=True)
      band(axes[1], steps, tr["risk"][best[i], i], name, log=True)
    for ax, lab in ((axes[0], "||theta - theta*||^2"), (axes[1], "excess pi-risk")):
      ax.set(yscale="log", xlabel="step", ylabel=lab)
    for key, ls in (("gls", "--"), ("ols", ":")):
      axes[0].axhline(ref[key], color="k", ls=ls, lw=1, label=f"d s_{key.upper()}")
    axes[0].legend(fontsize=7)
    w_all = np.stack([tr["w"][best[i], i] for i in range(len(L.METHODS))])
    b_all = np.stack([tr["b"][best[i], i] for i in range(len(L.METHODS))])
    weight_panels(axes[2:], steps, w_all, b_all, cfg.mix.batch_size)
    fig.suptitle(f"Fig. 1 ({setting}: C={c}, reading {reading}, sigma^2="
                 f"{tuple(round(float(v), 4) for v in problem.sigma2)}), d={f.d}, "
                 f"{cfg.seeds} seeds, best step size per method")
    save(fig, out, f"fig1_{setting}.png")
  return results


def fig1_table(res: dict[str, Any]) -> str:
  lines = []
  for setting, r in res.items():
    lines += [f"\n**{setting}** (C={tuple(r['c'])}, reading {r['reading']}, sigma^2="
              f"{tuple(r['sigma2'])}): d s_OLS = {r['reference']['ols']:.3e}, d s_GLS = "
              f"{r['reference']['gls']:.3e} (closed-form estimators on these seeds: OLS "
              f"{r['exact_mc']['ols']:.3e}, GLS {r['exact_mc']['gls']:.3e})\n",
              "| method | best lr | final err (mean +- sd) | final excess risk | w2/w1 | "
              "b1 first -> last | reaches Uniform's final err at step |",
              "|---|---|---|---|---|---|---|"]
    for name, m in r["methods"].items():
      lines.append(f"| {NAMES[name]} | {m['lr']:g} | {m['err']:.3e} +- {m['err_sd']:.1e} | "
                   f"{m['risk']:.3e} | {m['w_ratio']:.3g} | {m['b1_first']:.1f} -> "
                   f"{m['b1']:.1f} | {m['reach_uniform_final']} |")
  return "\n".join(lines)


# --------------------------------------------------------------------------- Fig. 2
FIG2_SETTINGS = {"similar": ((0.1, 0.1), (1.0, 1.0)), "different": ((0.4, 0.0), (1.0, 1.0)),
                 "different_scaled": ((0.4, 0.0), (1.0, 100.0))}


def fig2(cfg, out: str) -> dict[str, Any]:
  f = cfg.fig2
  mcfg = mix_config(cfg, "erma")
  pi = jnp.array([0.5, 0.5])
  results: dict[str, Any] = {}
  for setting in config_lib.split_list(f.settings):
    flip, c = FIG2_SETTINGS[setting]
    sets = [tasks.logistic_domains(cfg.base_seed + s, d=f.d, c=c, flip=flip,
                                   n_train=f.n_train, n_val=f.n_val, n_test=f.n_test,
                                   theta_scale=f.theta_scale) for s in range(cfg.seeds)]
    shared = {"pi": pi, "lr_scale": jnp.asarray(1.0 / float(np.dot(pi, c)), pi.dtype)}
    inputs = MC.stack([{"train": tr, "val": va, "test": te, **shared}
                       for _, tr, va, te in sets])
    fn = grid_fn(tasks.logistic_loss, sgd_scaled, zeros_init, fig2_eval, mcfg, f.steps)
    tr = grid_runs(fn, inputs, cfg.seeds, cfg.base_seed, values=np.asarray([f.lr]))
    tr = jax.tree.map(lambda a: a[0], tr)
    steps = tr["step"][0, 0]
    rows = {name: {"logloss": float(final(tr["test_logloss"][i]).mean()),
                   "logloss_sd": float(final(tr["test_logloss"][i]).std()),
                   "accuracy": float(final(tr["test_accuracy"][i]).mean()),
                   "accuracy_sd": float(final(tr["test_accuracy"][i]).std()),
                   "w": tr["w"][i, :, -1].mean(0).tolist(), "b": tr["b"][i, :, -1].mean(0).tolist()}
            for i, name in enumerate(L.METHODS)}
    results[setting] = {"flip": flip, "c": c, "methods": rows}
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    for i, name in enumerate(L.METHODS):
      band(axes[0], steps, tr["test_logloss"][i], name)
      band(axes[1], steps, tr["test_accuracy"][i], name)
    axes[0].set(xlabel="step", ylabel="clean test log-loss")
    axes[1].set(xlabel="step", ylabel="clean test accuracy")
    axes[0].legend(fontsize=7)
    weight_panels(axes[2:], steps, tr["w"], tr["b"], cfg.mix.batch_size)
    fig.suptitle(f"Fig. 2 ({setting}: flip={flip}, C={c}), ERMA loss weights, "
                 f"{cfg.seeds} seeds")
    save(fig, out, f"fig2_{setting}.png")
  return results


def class_table(res: dict[str, Any], keys: tuple[str, ...], header: str) -> str:
  lines = []
  for setting, r in res.items():
    extra = ", ".join(f"{k}={r[k]}" for k in keys)
    first_col = f" {header} |" if header else ""
    lines += [f"\n**{setting}** ({extra})\n",
              f"| method |{first_col} clean test accuracy | w (last) | b (last) |",
              "|---|" + ("---|" if header else "") + "---|---|---|"]
    for name, m in r["methods"].items():
      first = (f"{m['logloss']:.4f} +- {m['logloss_sd']:.4f} | " if "logloss" in m else "")
      lines.append(f"| {NAMES[name]} | {first}{m['accuracy']:.4f} +- {m['accuracy_sd']:.4f} | "
                   f"{np.round(m['w'], 3).tolist()} | {np.round(m['b'], 1).tolist()} |")
  return "\n".join(lines)


# --------------------------------------------------------------------------- Fig. 3
def fig3(cfg, out: str) -> dict[str, Any]:
  from flax import nnx
  f = cfg.fig3
  mcfg = mix_config(cfg, "erma")
  pi = jnp.array([0.5, 0.5])
  results: dict[str, Any] = {}
  for noise in f.noise:
    inputs, loss_fn, rebuild = [], None, None
    for s in range(cfg.seeds):
      tr, va, te = tasks.digits_domains(cfg.base_seed + s, noise=(0.0, noise), n_val=f.n_val,
                                        n_test=f.n_test)
      model = tasks.MLP(64, f.hidden, 10, rngs=nnx.Rngs(cfg.base_seed + s))
      loss_fn, params, rebuild = L.nnx_loss(model, tasks.cross_entropy)
      inputs.append({"train": tr, "val": va, "test": te, "params": params, "pi": pi})
    inputs = MC.stack(inputs)
    fn = grid_fn(loss_fn, lambda _, inp: optax.adam(f.lr), lambda inp: inp["params"],
                 lambda p, inp: {"accuracy": tasks.mlp_accuracy(rebuild(p), inp["test"])},
                 mcfg, f.steps)
    tr = grid_runs(fn, inputs, cfg.seeds, cfg.base_seed)
    steps = tr["step"][0, 0]
    rows = {name: {"accuracy": float(final(tr["accuracy"][i]).mean()),
                   "accuracy_sd": float(final(tr["accuracy"][i]).std()),
                   "w": tr["w"][i, :, -1].mean(0).tolist(), "b": tr["b"][i, :, -1].mean(0).tolist()}
            for i, name in enumerate(L.METHODS)}
    results[f"noise_{noise}"] = {"noise": (0.0, noise), "methods": rows}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for i, name in enumerate(L.METHODS):
      band(axes[0], steps, tr["accuracy"][i], name)
    axes[0].set(xlabel="step", ylabel="clean test accuracy",
                ylim=(max(0.0, float(tr["accuracy"][:, :, -1].min()) - 0.1), 1.0))
    axes[0].legend(fontsize=7)
    weight_panels(axes[1:], steps, tr["w"], tr["b"], cfg.mix.batch_size)
    fig.suptitle(f"Fig. 3 (digits MLP 64-{f.hidden}-10, domain 2 label noise {noise}), "
                 f"ERMA loss weights, {cfg.seeds} seeds")
    save(fig, out, f"fig3_noise{noise}.png")
  return results


# --------------------------------------------------------------------------- driver
def save(fig, out: str, name: str) -> None:
  fig.tight_layout()
  fig.savefig(os.path.join(out, name), dpi=110)
  plt.close(fig)


def lm(cfg, out: str) -> dict[str, Any]:
  from examples.data_mixing_lm import run_lm
  return run_lm(cfg, out)


def table(experiment: str, res: dict[str, Any]) -> str:
  if experiment == "fig1":
    return fig1_table(res)
  if experiment == "fig2":
    return class_table(res, ("flip", "c"), "clean test log-loss")
  if experiment == "fig3":
    return class_table(res, ("noise",), "")
  from examples.data_mixing_lm import lm_table
  return lm_table(res)


def main(argv: list[str]) -> dict[str, Any]:
  cfg, _ = config_lib.parse_args(argv, default="data_mixing")  # takes --experiment=NAME
  from tnx.configs.data_mixing import EXPERIMENTS
  if cfg.experiment not in EXPERIMENTS:
    raise ValueError(f"--experiment must be one of {list(EXPERIMENTS)}, got {cfg.experiment!r}")
  out = os.path.join(cfg.workdir, cfg.experiment)
  os.makedirs(out, exist_ok=True)
  t0 = time.perf_counter()
  res = {"fig1": fig1, "fig2": fig2, "fig3": fig3, "lm": lm}[cfg.experiment](cfg, out)
  wall = time.perf_counter() - t0
  seeds = (f"seed {cfg.base_seed}" if cfg.experiment == "lm" else
           f"{cfg.seeds} seeds (base seed {cfg.base_seed})")
  md = f"### {cfg.experiment}: {seeds}, wall {wall:.0f} s\n" + table(cfg.experiment, res) + "\n"
  print(md, flush=True)
  with open(os.path.join(out, "results.json"), "w") as fh:
    json.dump({"config": json.loads(cfg.to_json_best_effort()), "wall_s": wall,
               "results": res}, fh, indent=1, default=float)
  with open(os.path.join(out, "results.md"), "w") as fh:
    fh.write(md)
  if cfg.docs:
    docs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
    for name in sorted(os.listdir(out)):
      if name.endswith((".png", ".md")):
        shutil.copy(os.path.join(out, name), os.path.join(docs, f"mixing_{name}" if
                    name.startswith(cfg.experiment) else f"mixing_{cfg.experiment}_{name}"))
  return {"results": res, "wall_s": wall, "out": out}


if __name__ == "__main__":
  main(sys.argv[1:])
