"""DP synthetic embeddings: accuracy vs epsilon on digits, mean recovery on synthetic GMMs.

  python -m examples.dp_embeddings            # full run (a few minutes on 2 CPU cores)
  python -m examples.dp_embeddings --smoke    # ~45 s CPU
  python -m examples.dp_embeddings --docs     # also copy the figures into docs/

Digits: a small MLP encoder is trained on the public 30 % of sklearn's bundled digits; the
private part is embedded (L2-normalised, R = 1), a DP per-class Gaussian mixture is fitted,
n synthetic embeddings are sampled, and a two-layer probe trained on them is tested on real
held-out embeddings. Synthetic GMMs: matched mean error of the DP mixture against n and epsilon.
Writes results.json, privacy_digits_accuracy.png and privacy_gmm_recovery.png under
config.workdir. Config: tnx/configs/dp_embeddings.py.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from scipy import optimize

from tnx.privacy import classifier, clustering, data, embeddings, encoders
from tnx.train import config as config_lib
from tnx.train import paths

jax.config.update("jax_enable_x64", True)   # float64 noise for the privacy-critical sums


DOCS = Path(__file__).resolve().parents[1] / "docs"
FIGURES = ("privacy_digits_accuracy.png", "privacy_gmm_recovery.png")


def settings(c: Any) -> dict:
  """The plain settings the experiments read, from the ConfigDict."""
  return dict(
      eps=[float(e) for e in str(c.eps).split(",") if e.strip()], delta=c.delta,
      seeds=c.seeds, dim=c.dim, k=c.k, lsh_depth=c.lsh_depth,
      probe=classifier.TrainConfig(epochs=c.probe_epochs),
      encoder=classifier.TrainConfig(epochs=c.encoder_epochs),
      gmm_n=list(c.gmm_n), gmm_eps=list(c.gmm_eps), gmm_n_fixed=c.gmm_n_fixed,
      gmm=dict(c.gmm), gmm_seeds=c.gmm_seeds)


def _methods(cfg: dict, public_centres: np.ndarray) -> dict:
  """name -> (backend, config); backend None means K = 1 (no clustering)."""
  diag = dict(cov_type="diag")
  return {
      "prototype (K=1)": (None, embeddings.DPGMMConfig(k=1, **diag)),
      f"LSH coreset (K={cfg['k']})": (clustering.LSHCoresetBackend(max_depth=cfg["lsh_depth"]),
                                      embeddings.DPGMMConfig(k=cfg["k"], **diag)),
      f"DP Lloyd, public init (K={cfg['k']})": (
          clustering.LloydBackend(public_centres, rounds=3),
          embeddings.DPGMMConfig(k=cfg["k"], **diag)),
  }


def run_digits(cfg: dict) -> dict:
  sp = data.digits_splits(seed=0)
  enc = encoders.train_mlp_encoder(sp.x_public, sp.y_public, 10, dim=cfg["dim"],
                                   config=cfg["encoder"])
  z_pub, z_priv, z_test = enc(sp.x_public), enc(sp.x_private), enc(sp.x_test)
  # Public initial centres for DP Lloyd: k-means of the public embeddings of each class.
  z_pub_np = np.asarray(z_pub)
  public_centres = np.stack([clustering.weighted_kmeans(
      z_pub_np[sp.y_public == c], np.ones((sp.y_public == c).sum()), cfg["k"], c, cfg["dim"])
      for c in range(10)])
  real = [classifier.accuracy(classifier.train_probe(
      z_priv, sp.y_private, 10, config=_seeded(cfg["probe"], s)), z_test, sp.y_test)
      for s in range(cfg["seeds"])]
  out = {"n_public": len(sp.y_public), "n_private": len(sp.y_private),
         "n_test": len(sp.y_test), "real": real, "runs": {}}
  for name, (backend, gcfg) in _methods(cfg, public_centres).items():
    for eps in cfg["eps"]:
      be = backend
      if math.isinf(eps) and backend is not None:
        be = clustering.KMeansBackend()
      accs, spent = [], None
      for s in range(cfg["seeds"]):
        key = jax.random.key(1000 * s + 17)
        zs, ys, budget = embeddings.synthetic_embeddings(
            key, z_priv, sp.y_private, 10, len(sp.y_private), eps, cfg["delta"], 1.0, be, gcfg)
        model = classifier.train_probe(zs, ys, 10, config=_seeded(cfg["probe"], s))
        accs.append(classifier.accuracy(model, z_test, sp.y_test))
        spent = budget.epsilon
      out["runs"][f"{name}|{eps}"] = {"method": name, "eps": eps, "spent": spent, "acc": accs}
      print(f"digits {name:34s} eps={eps:<5} spent={spent:.4f} acc={np.mean(accs):.3f}"
            f" +- {np.std(accs):.3f}", flush=True)
  return out


def _seeded(c: classifier.TrainConfig, seed: int) -> classifier.TrainConfig:
  return classifier.TrainConfig(c.epochs, c.batch_size, c.learning_rate, c.val_fraction,
                                c.patience, seed)


def mean_error(means_KxD: np.ndarray, truth_KxD: np.ndarray) -> float:
  """Average L2 error after optimal (Hungarian) matching of estimated to true means."""
  cost = np.linalg.norm(means_KxD[:, None] - truth_KxD[None], axis=-1)
  r, c = optimize.linear_sum_assignment(cost)
  return float(cost[r, c].mean())


def _recovery(cfg: dict, n: int, eps: float, seed: int) -> float:
  g = cfg["gmm"]
  z, y, _, truth = data.sphere_gmm(jax.random.key(seed), n, 1, g["k"], g["dim"], g["gap"],
                                   g["std"])
  be = clustering.KMeansBackend() if math.isinf(eps) else clustering.LSHCoresetBackend()
  rel = embeddings.fit_dp_gmm(jax.random.key(seed + 1), z, y, 1, eps, cfg["delta"], 1.0, be,
                              embeddings.DPGMMConfig(k=g["k"], cov_type="diag"))
  return mean_error(np.asarray(rel.mixture.means_CxKxD[0]), truth.means_CxKxD[0])


def run_gmm(cfg: dict) -> dict:
  out = {"vs_n": {}, "vs_eps": {}}
  for n in cfg["gmm_n"]:
    for eps in (1.0, math.inf):
      errs = [_recovery(cfg, n, eps, s) for s in range(cfg["gmm_seeds"])]
      out["vs_n"][f"{n}|{eps}"] = {"n": n, "eps": eps, "err": errs}
      print(f"gmm n={n:<6} eps={eps:<4} err={np.mean(errs):.5f}", flush=True)
  for eps in cfg["gmm_eps"]:
    errs = [_recovery(cfg, cfg["gmm_n_fixed"], eps, s) for s in range(cfg["gmm_seeds"])]
    out["vs_eps"][str(eps)] = {"eps": eps, "err": errs}
    print(f"gmm n={cfg['gmm_n_fixed']} eps={eps:<4} err={np.mean(errs):.5f}", flush=True)
  return out


def plot(results: dict, out_dir: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  dig = results["digits"]
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  methods = sorted({r["method"] for r in dig["runs"].values()})
  finite = sorted({r["eps"] for r in dig["runs"].values() if not math.isinf(r["eps"])})
  for mth in methods:
    rs = [dig["runs"][f"{mth}|{e}"] for e in finite]
    ax.errorbar(finite, [np.mean(r["acc"]) for r in rs], [np.std(r["acc"]) for r in rs],
                marker="o", capsize=3, label=mth)
  ax.axhline(np.mean(dig["real"]), color="k", ls="--", label="real embeddings (non-private)")
  ax.set_xscale("log", base=2)
  ax.set(xlabel="epsilon (delta = 1e-5)", ylabel="test accuracy", title="digits: probe on DP "
         "synthetic embeddings")
  ax.legend(fontsize=7)
  fig.tight_layout()
  paths.save_figure(fig, paths.path(out_dir) / FIGURES[0], dpi=120)

  g = results["gmm"]
  fig, axs = plt.subplots(1, 2, figsize=(9, 3.6))
  for eps, style in ((1.0, "o-"), (math.inf, "s--")):
    rs = [v for v in g["vs_n"].values() if v["eps"] == eps]
    axs[0].loglog([r["n"] for r in rs], [np.mean(r["err"]) for r in rs], style,
                  label=f"eps={eps}")
  axs[0].set(xlabel="n", ylabel="matched mean L2 error", title="recovery vs n")
  axs[0].legend()
  rs = list(g["vs_eps"].values())
  axs[1].loglog([r["eps"] for r in rs], [np.mean(r["err"]) for r in rs], "o-")
  axs[1].set(xlabel="epsilon", ylabel="matched mean L2 error", title="recovery vs epsilon")
  fig.tight_layout()
  paths.save_figure(fig, paths.path(out_dir) / FIGURES[1], dpi=120)


def main(argv: list[str] | None = None) -> dict:
  c, _ = config_lib.parse_args(sys.argv[1:] if argv is None else argv, default="dp_embeddings")
  cfg = settings(c)
  out = paths.path(c.workdir)
  out.mkdir(parents=True, exist_ok=True)
  t0 = time.time()
  results = {"digits": run_digits(cfg), "gmm": run_gmm(cfg)}
  results["seconds"] = time.time() - t0
  print(f"total {results['seconds']:.1f} s; results.json and figures in {out}")
  paths.write_text(out / "results.json", json.dumps(results, indent=1, default=str))
  if c.plots:
    plot(results, out)
    if c.docs:
      paths.copy_into([out / f for f in FIGURES], DOCS)
      print(f"copied the figures into {DOCS}")
  return results


if __name__ == "__main__":
  main()
