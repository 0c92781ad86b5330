"""Optimal retraining with noisy labels: state evolution, AMP simulation and linear probes.

  python -m examples.amp_retraining            # full run (a few minutes on 2 CPU cores)
  python -m examples.amp_retraining --smoke    # ~20 s CPU
  python -m examples.amp_retraining --docs     # also copy the figures into docs/

Prints markdown tables and writes, under config.workdir, results.json (every number of the
tables) and amp_se_vs_sim.png, amp_cobweb.png, amp_se_noise.png, amp_probe_noise.png.
Config: tnx/configs/amp_retraining.py.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tnx.amp import aggregators as A  # noqa: E402
from tnx.amp import amp, data, probe, se  # noqa: E402
from tnx.train import config as config_lib  # noqa: E402
from tnx.train import paths  # noqa: E402

SE_NAMES = ("plain", "hard", "consensus", "soft_self", "bayes")


DOCS = Path(__file__).resolve().parents[1] / "docs"


def _save(fig, cfg, name: str) -> None:
  fig.tight_layout()
  paths.save_figure(fig, paths.path(cfg.workdir) / name, dpi=120)
  plt.close(fig)


def se_vs_sim(cfg, res):
  pr = data.make_problem(1.5, 2.0, 0.3, prior=0.3)
  keys = jax.random.split(jax.random.key(0), cfg.sim_seeds)
  print("\n### State evolution vs Monte Carlo AMP (gamma=1.5, p=0.3, alpha=2, pi+=0.3; "
        f"n={cfg.n}, {cfg.sim_seeds} seeds)\n")
  print("| aggregator | round | eta SE | eta sim (mean +- sd) | error SE | error sim |")
  print("|---|---|---|---|---|---|")
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for name in ("bayes", "consensus", "hard"):
    r = amp.simulate(keys, pr, A.get(name), n=cfg.n, d=cfg.n // 2, rounds=6)
    eta_sim, err_sim = np.asarray(r.eta_test), np.asarray(r.error_test)
    for t in range(6):
      print(f"| {name} | {t} | {float(r.eta_se[0, t]):.4f} | {eta_sim[:, t].mean():.4f} +- "
            f"{eta_sim[:, t].std():.4f} | {float(r.error_se[0, t]):.4f} | "
            f"{err_sim[:, t].mean():.4f} |")
    res.setdefault("se_vs_sim", {})[name] = {
        "eta_se": np.asarray(r.eta_se[0]).tolist(), "eta_sim_mean": eta_sim.mean(0).tolist(),
        "eta_sim_sd": eta_sim.std(0).tolist(), "error_se": np.asarray(r.error_se[0]).tolist(),
        "error_sim_mean": err_sim.mean(0).tolist(), "seeds": int(eta_sim.shape[0])}
    line, = ax.plot(np.asarray(r.eta_se[0]), label=f"{name} SE")
    ax.errorbar(np.arange(6), eta_sim.mean(0), eta_sim.std(0), fmt="o", color=line.get_color(),
                label=f"{name} sim")
  ax.set(xlabel="round (0 = plain training)", ylabel="eta", title="SE vs AMP simulation")
  ax.legend(fontsize=7)
  _save(fig, cfg, "amp_se_vs_sim.png")


def cobweb(cfg, res):
  pr = data.make_problem(1.5, 2.0, 0.3, prior=0.3)
  grid = jnp.linspace(0.0, 1.6, 161)
  f = se.bayes_map_gmm(pr, grid)
  fig, ax = plt.subplots(figsize=(4.5, 4.5))
  ax.plot(grid, f, label="F(eta)")
  ax.plot(grid, grid, "k--", lw=0.8)
  print("\n### Cobweb (gamma=1.5, p=0.3, alpha=2, pi+=0.3)\n")
  for start in (0.2, 1.0):
    eta = np.asarray(se.trajectory(pr, A.get("bayes"), 8, start_eta=start).eta)
    print(f"start {start}: " + " -> ".join(f"{e:.3f}" for e in eta[:6]))
    res.setdefault("cobweb", {}).setdefault("trajectories", {})[str(start)] = eta.tolist()
    xs, ys = [eta[0]], [0.0]
    for a, b in zip(eta[:-1], eta[1:]):
      xs += [a, b]
      ys += [b, b]
    ax.plot(xs, ys, lw=1, label=f"start {start}")
  fp = float(se.fixed_point(pr, A.get("bayes"), 0.2))
  plain = float(se.trajectory(pr, A.get("bayes"), 1).eta[0])
  print(f"plain-training eta_1 = {plain:.4f}; fixed point {fp:.4f}, error "
        f"{float(se.error_of(fp)):.4f} vs plain {float(se.error_of(plain)):.4f}")
  res["cobweb"].update(fixed_point=fp, plain_eta=plain, error_fixed_point=float(se.error_of(fp)),
                       error_plain=float(se.error_of(plain)))
  ax.set(xlabel="eta_t", ylabel="eta_{t+1}", title="Bayes-optimal retraining: cobweb")
  ax.legend(fontsize=8)
  _save(fig, cfg, "amp_cobweb.png")


def se_noise(cfg, noise, res):
  grid = data.problem_grid(gamma=[1.0], alpha=[2.0], p=noise)
  print("\n### SE test error vs label noise (gamma=1, alpha=2, balanced), after 5 retraining "
        "rounds\n")
  print("| p | " + " | ".join(SE_NAMES) + " |")
  print("|---" * (len(SE_NAMES) + 1) + "|")
  errs = {n: np.asarray(se.grid(grid, A.get(n), 6).error[:, 5]) for n in SE_NAMES}
  for i, p in enumerate(noise):
    print(f"| {p} | " + " | ".join(f"{errs[n][i]:.3f}" for n in SE_NAMES) + " |")
  res["se_noise"] = {"noise": list(noise), **{n: errs[n].tolist() for n in SE_NAMES}}
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for n in SE_NAMES:
    ax.plot(noise, 1 - errs[n], "o-", label=n)
  ax.set(xlabel="flip rate p", ylabel="accuracy (SE)", title="GMM, gamma=1, alpha=2, 5 rounds")
  ax.legend(fontsize=8)
  _save(fig, cfg, "amp_se_noise.png")


def datasets(smoke):
  from sklearn.datasets import load_breast_cancer, load_digits
  sx, sy = probe.gmm_features(jax.random.key(5), 1000 + 2000, 250, 1.0)
  bc = load_breast_cancer()
  dg = load_digits()
  out = {
      "synthetic GMM (n=1000, d=250, gamma=1)": (sx, sy, 1000, 1.0),
      "breast cancer (n=400, d=30)": (bc.data, np.where(bc.target == 1, 1.0, -1.0), 400, 1e-2),
      "digits even/odd (n=1200, d=64)": (dg.data, np.where(dg.target % 2 == 0, 1.0, -1.0),
                                         1200, 1e-2),
  }
  if smoke:
    out = {k: v for k, v in out.items() if k.startswith("breast")}
  return out


def probe_noise(cfg, noise, results):
  names = ("plain", "bayes") if cfg.smoke else probe.AGGREGATORS
  extra = () if cfg.smoke else ("bayes_in",)
  res = {}
  for label, (x, y, n_train, l2) in datasets(cfg.smoke).items():
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    prior = float(np.mean(np.asarray(y) > 0))                 # class prior assumed known
    c = probe.ProbeConfig(l2=l2, rounds=cfg.probe_rounds, prior=prior)
    print(f"\n### Linear probe, {label}: test accuracy after {cfg.probe_rounds} rounds "
          f"(mean +- s.e., {cfg.probe_seeds} seeds; l2={l2}; cross-fitted, K=5)\n")
    print("| p | " + " | ".join(names + extra) + " |")
    print("|---" * (len(names + extra) + 1) + "|")
    res[label] = {}
    for p in noise:
      row = {}
      for n in names + extra:
        cc = c._replace(cross_fit=False) if n == "bayes_in" else c
        acc = np.asarray(probe.evaluate(jax.random.key(7), x, y, n_train=n_train, p=p,
                                        name="bayes" if n == "bayes_in" else n, config=cc,
                                        seeds=cfg.probe_seeds))[:, -1]
        row[n] = (acc.mean(), acc.std() / np.sqrt(acc.size))
      res[label][p] = row
      results.setdefault("probe", {}).setdefault(label, {})[str(p)] = {
          n: {"mean": float(v[0]), "se": float(v[1])} for n, v in row.items()}
      print(f"| {p} | " + " | ".join(f"{row[n][0]:.3f} +- {row[n][1]:.3f}"
                                     for n in names + extra) + " |")
  fig, axes = plt.subplots(1, len(res), figsize=(4.5 * len(res), 3.5), squeeze=False)
  for ax, (label, rows) in zip(axes[0], res.items()):
    for n in names + extra:
      ax.errorbar(noise, [rows[p][n][0] for p in noise], [rows[p][n][1] for p in noise],
                  fmt="o-", ms=3, label=n)
    ax.set(xlabel="flip rate p", ylabel="test accuracy", title=label)
    ax.title.set_fontsize(8)
  axes[0][0].legend(fontsize=7)
  _save(fig, cfg, "amp_probe_noise.png")


def main(argv: list[str] | None = None) -> dict:
  cfg, _ = config_lib.parse_args(sys.argv[1:] if argv is None else argv,
                                 default="amp_retraining")
  out = paths.path(cfg.workdir)
  out.mkdir(parents=True, exist_ok=True)
  noise = [float(v) for v in cfg.noise]
  res: dict = {}
  t0 = time.time()
  se_vs_sim(cfg, res)
  cobweb(cfg, res)
  se_noise(cfg, noise, res)
  probe_noise(cfg, noise, res)
  res["seconds"] = time.time() - t0
  paths.write_text(out / "results.json", json.dumps(res, indent=1))
  print(f"\n(total {res['seconds']:.0f} s; results.json and figures in {out})")
  if cfg.docs:
    figs = [out / f"{n}.png" for n in ("amp_se_vs_sim", "amp_cobweb", "amp_se_noise",
                                        "amp_probe_noise")]
    paths.copy_into(figs, DOCS)
    print(f"copied the figures into {DOCS}")
  return res


if __name__ == "__main__":
  main()
