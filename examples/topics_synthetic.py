"""DP synthetic Topics API data (arXiv 2506.23855) on a generated ground-truth population.

  python -m examples.topics_synthetic            # full demo (minutes on 2 CPU cores)
  python -m examples.topics_synthetic --smoke    # seconds
  python -m examples.topics_synthetic --docs     # also copy figures and table into docs/

For every seed: a population with topic communities and drifting interests goes through the
Topics API simulator (weekly top-5 sets); its within/across-week pair statistics are released
with user-level DP at each epsilon and written in the public release's JSON format; the fit
reads those files back, fits type mixtures with several numbers of types, and samples a
synthetic population of the same size. Both populations then go through the API simulator on
two sites and the re-identification attack for 1..W exposed epochs.

Writes <workdir>/{results.json, results.md, topics_reid.png, topics_errors.png} and, for one
(epsilon, T), release-format files under <workdir>/release/. Config:
tnx/configs/topics_synthetic.py.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

import jax
import matplotlib
import ml_collections as mlc
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tnx.privacy.topics import (  # noqa: E402
    api,
    fit,
    model,
    population,
    public,
    reid,
    stats,
    storage,
    tfrecord,
)
from tnx.train import config as config_lib  # noqa: E402

FIGURES = ("topics_reid.png", "topics_errors.png")


def parse(argv: list[str]) -> mlc.ConfigDict:
  rest = ["--config.docs=True" if a == "--docs" else a for a in argv]
  cfg, _ = config_lib.parse_args(rest, default="topics_synthetic")
  return cfg


def _floats(text) -> list[float]:
  return [float(t) for t in config_lib.split_list(text)]


def _ints(text) -> list[int]:
  return [int(t) for t in config_lib.split_list(text)]


def _l1(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.abs(a - b).sum())


def _errors(got: stats.TopicStatistics, exact: stats.TopicStatistics) -> dict:
  return {"within": _l1(got.within_OxO, exact.within_OxO),
          "across": _l1(got.across_OxO, exact.across_OxO)}


def _model_statistics(mixture: model.TypeMixture) -> stats.TopicStatistics:
  """Closed-form week-averaged statistics of the fitted model (what the fit matched)."""
  t = model.marginal_tables(mixture)
  within = np.triu(np.asarray(t["within"]).mean(0), 1)
  return stats.TopicStatistics(np.asarray(t["single"]).mean(0), within,
                               np.asarray(t["lag1"]).mean(0))


def _rates(key, sets, api_cfg, num_queries) -> list[float]:
  shown = api.site_topics(key, sets, 2, api_cfg)
  return reid.reidentification_rates(jax.random.fold_in(key, 1), shown[0], shown[1], api_cfg,
                                     num_queries).tolist()


def _synthetic_sets(key, mixture, num_users, num_topics):
  slots, _ = model.sample_slots(key, mixture, num_users)
  # Raw slot draws -> the week's distinct topics -> padded to k, as the API would.
  return api.pad_sets(jax.random.fold_in(key, 1), api.dedup_slots(slots), num_topics)


def _export(cfg, mixture, taxonomy, sets_dir, key) -> dict:
  """Writes parameters and synthetic users in the release formats and reads them back."""
  out = os.path.join(cfg.workdir, "release")
  public.save_parameters(os.path.join(out, "output_parameters.json"), mixture, taxonomy)
  back = public.load_parameters(os.path.join(out, "output_parameters.json"), taxonomy)
  n = cfg.population.num_users
  path = os.path.join(out, "synthetic_users.parquet")
  storage.sample_to_parquet(key, back, taxonomy.ids_O, n, path, seed=0)
  ids, topics = storage.read_parquet(path)
  m = min(cfg.export.tfrecord_users, n)
  shard = os.path.join(out, "topic_set_sequences-00000-of-00001.tfrecord")
  tfrecord.write_users(shard, [f"user-{i}" for i in ids[:m]], topics[:m])
  _, from_tf = tfrecord.read_users(shard)
  for name in ("q_within.json", "q_across.json"):
    shutil.copy(os.path.join(sets_dir, name), os.path.join(out, name))
  return {"dir": out, "parquet_users": int(len(ids)), "tfrecord_users": m,
          "tfrecord_matches_parquet": bool(np.array_equal(from_tf, topics[:m]))}


def run_seed(cfg: mlc.ConfigDict, seed: int, log) -> dict:
  pop_cfg = population.PopulationConfig(**cfg.population.to_dict())
  api_cfg = api.APIConfig(num_topics=pop_cfg.num_topics, top_k=cfg.api.top_k,
                          random_topic_prob=cfg.api.random_topic_prob)
  o, w = pop_cfg.num_topics, pop_cfg.num_weeks
  taxonomy = public.generated_taxonomy(o)
  key = jax.random.PRNGKey(1000 + seed)
  sets, _ = population.topic_sets(seed, pop_cfg, api_cfg.top_k)
  exact = stats.exact_statistics(sets, o)
  n_syn = cfg.attack.synthetic_users or pop_cfg.num_users
  res = {"real_reid": _rates(jax.random.fold_in(key, 0), sets, api_cfg, cfg.attack.num_queries),
         "runs": []}
  log(f"seed {seed}: real re-id {np.round(res['real_reid'], 4).tolist()}")
  for i, eps in enumerate(_floats(cfg.release.epsilons)):
    rel_cfg = stats.ReleaseConfig(epsilon=eps, delta=cfg.release.delta,
                                  count_fraction=cfg.release.count_fraction)
    rel = stats.release(jax.random.fold_in(key, 10 + i), sets, o, rel_cfg)
    noisy = rel.frequencies(cfg.release.threshold_sigmas)
    # The fit reads the statistics back from the public release format.
    sets_dir = os.path.join(cfg.workdir, "stats", f"seed{seed}_eps{eps:g}")
    public.save_taxonomy(os.path.join(sets_dir, "taxonomy.json"), taxonomy)
    public.save_pair_table(os.path.join(sets_dir, "q_within.json"), noisy.within_OxO, taxonomy,
                           "within")
    public.save_pair_table(os.path.join(sets_dir, "q_across.json"), noisy.across_OxO, taxonomy,
                           "across")
    loaded = public.load_statistics(os.path.join(sets_dir, "q_within.json"),
                                    os.path.join(sets_dir, "q_across.json"),
                                    public.load_taxonomy(os.path.join(sets_dir, "taxonomy.json")),
                                    api_cfg.top_k)
    for t in _ints(cfg.fit.num_types):
      fit_cfg = fit.FitConfig(num_types=t, num_slots=api_cfg.top_k,
                              batch_size=cfg.fit.batch_size, num_epochs=cfg.fit.num_epochs,
                              learning_rate=cfg.fit.learning_rate, init_std=cfg.fit.init_std,
                              seed=seed)
      t0 = time.perf_counter()
      fitted = fit.fit_mixture(loaded, w, fit_cfg, epochs_per_call=cfg.fit.epochs_per_call)
      fit_s = time.perf_counter() - t0
      k_syn = jax.random.fold_in(key, 100 * (i + 1) + t)
      syn_sets = _synthetic_sets(k_syn, fitted.mixture, n_syn, o)
      run = {"epsilon": eps, "num_types": t, "spent_epsilon": rel.budget.epsilon,
             "pair_sigma_freq": rel.pair_sigma / pop_cfg.num_users,
             "dp_error": _errors(noisy, exact),
             "model_error": _errors(_model_statistics(fitted.mixture), exact),
             "synthetic_error": _errors(stats.exact_statistics(syn_sets, o), exact),
             "final_loss": float(fitted.epoch_losses[-1]), "fit_seconds": fit_s,
             "synthetic_reid": _rates(jax.random.fold_in(k_syn, 2), syn_sets, api_cfg,
                                      cfg.attack.num_queries)}
      res["runs"].append(run)
      log(f"seed {seed} eps {eps:g} T {t}: loss {run['final_loss']:.2e} "
          f"model err {run['model_error']} re-id {np.round(run['synthetic_reid'], 4).tolist()} "
          f"({fit_s:.1f}s)")
      if seed == _ints(cfg.seeds)[0] and eps == cfg.export.epsilon and t == cfg.export.num_types:
        res["export"] = _export(cfg, fitted.mixture, taxonomy, sets_dir, k_syn)
  return res


def _mean_std(values) -> str:
  v = np.asarray(values, float)
  return f"{v.mean():.4f} ± {v.std():.4f}" if len(v) > 1 else f"{v.mean():.4f}"


def _group(results: list[dict]) -> dict:
  groups = {}
  for res in results:
    for run in res["runs"]:
      groups.setdefault((run["epsilon"], run["num_types"]), []).append(run)
  return groups


def table(cfg, results: list[dict]) -> str:
  w = cfg.population.num_weeks
  head = ("| epsilon | T | L1 within: DP / model / synthetic | L1 across: DP / model / "
          "synthetic | " + " | ".join(f"re-id R={r + 1}" for r in range(w)) + " |")
  lines = [head, "|" + "---|" * (4 + w)]
  real = np.array([r["real_reid"] for r in results])
  lines.append("| real | - | - | - | " + " | ".join(_mean_std(real[:, r]) for r in range(w))
               + " |")
  for (eps, t), runs in sorted(_group(results).items()):
    err = {k: {f: np.mean([r[k][f] for r in runs]) for f in ("within", "across")}
           for k in ("dp_error", "model_error", "synthetic_error")}
    cells = [f"{err[k][f]:.3f}" for f in ("within", "across")
             for k in ("dp_error", "model_error", "synthetic_error")]
    reid_rt = np.array([r["synthetic_reid"] for r in runs])
    lines.append(f"| {eps:g} | {t} | {' / '.join(cells[:3])} | {' / '.join(cells[3:])} | "
                 + " | ".join(_mean_std(reid_rt[:, r]) for r in range(w)) + " |")
  return "\n".join(lines)


def plots(cfg, results: list[dict]) -> None:
  w = cfg.population.num_weeks
  epochs = np.arange(1, w + 1)
  eps_list, types = _floats(cfg.release.epsilons), _ints(cfg.fit.num_types)
  groups = _group(results)
  real = np.array([r["real_reid"] for r in results])
  fig, axes = plt.subplots(1, len(eps_list), figsize=(3.6 * len(eps_list), 3.2), sharey=True,
                           squeeze=False)
  for ax, eps in zip(axes[0], eps_list):
    ax.errorbar(epochs, real.mean(0), real.std(0), color="k", marker="o", label="real")
    for t in types:
      syn = np.array([r["synthetic_reid"] for r in groups[(eps, t)]])
      ax.errorbar(epochs, syn.mean(0), syn.std(0), marker=".", label=f"synthetic T={t}")
    ax.set_title(f"epsilon = {eps:g}")
    ax.set_xlabel("exposed epochs R")
    ax.set_xticks(epochs)
  axes[0, 0].set_ylabel("re-identification rate")
  axes[0, 0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(cfg.workdir, FIGURES[0]), dpi=120)
  plt.close(fig)

  fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), squeeze=False)
  x = np.arange(len(eps_list))
  for ax, fam in zip(axes[0], ("within", "across")):
    dp = [np.mean([r["dp_error"][fam] for t in types for r in groups[(e, t)]]) for e in eps_list]
    ax.plot(x, dp, "k--o", label="DP statistics")
    for t in types:
      ax.plot(x, [np.mean([r["model_error"][fam] for r in groups[(e, t)]]) for e in eps_list],
              marker=".", label=f"model T={t}")
    ax.set_xticks(x, [f"{e:g}" for e in eps_list])
    ax.set_xlabel("epsilon")
    ax.set_yscale("log")
    ax.set_title(f"L1 error of q_{fam}")
  axes[0, 0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(cfg.workdir, FIGURES[1]), dpi=120)
  plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
  cfg = parse(sys.argv[1:] if argv is None else argv)
  os.makedirs(cfg.workdir, exist_ok=True)
  log = lambda msg: print(msg, flush=True)
  start = time.perf_counter()
  results = [run_seed(cfg, s, log) for s in _ints(cfg.seeds)]
  text = table(cfg, results)
  wall = time.perf_counter() - start
  log(text + f"\n\nwall time {wall:.0f} s")
  summary = {"config": cfg.to_dict(), "seeds": results, "wall_seconds": wall}
  with open(os.path.join(cfg.workdir, "results.json"), "w") as f:
    json.dump(summary, f, indent=1, default=float)
  with open(os.path.join(cfg.workdir, "results.md"), "w") as f:
    f.write(text + "\n")
  plots(cfg, results)
  if cfg.docs:
    for name in FIGURES:
      shutil.copy(os.path.join(cfg.workdir, name), os.path.join("docs", name))
  return summary


if __name__ == "__main__":
  main()
