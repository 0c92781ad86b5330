"""XMAS vs baselines on ShapesVQA (arXiv 2510.01454 at CPU scale).

  python -m examples.xmas [--smoke] [--config.a.b=v ...] [--resume] [--docs]

1. Generate the pool (five task families, skewed, with paraphrased duplicates) and a
   balanced test set; optionally pre-train the proxy and every target on caption items
   (stage-1 alignment, as LLaVA pre-trains its projector); train the proxy one epoch on the
   pool, saving evenly spaced checkpoints (the first is the starting point).
2. Alignment trajectories in both attention orientations (top-K singular values of the
   cross-modal block at every checkpoint); EL2N scores and mean-pooled hidden states of the
   last proxy checkpoint for the baselines.
3. For every method, budget and seed: select, train a fresh target on the subset (same
   epochs as the full-pool target), measure per-family accuracy; ARP = mean over families of
   100 * accuracy / accuracy of the full-pool target (mean over seeds).

Methods: random; oracle (budget spread evenly over the task families, random inside);
el2n (highest EL2N of the last proxy checkpoint); embed_cluster (k-means on mean-pooled
hidden states, balanced, random inside); xmas; xmas_random_within; xmas_unstable_first;
xmas_last_checkpoint (clusters and stability from the last checkpoint only); xmas_reference
(the public code's attention orientation; optional).

Writes into config.workdir: runs.jsonl (one line per target run; --resume skips finished
ones), values.npz (trajectories), results.json, results.md, arp.png. With --docs also
docs/selection_xmas_arp.png and docs/selection_xmas_results.md. Config: tnx/configs/xmas.py.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from sklearn import metrics as sk_metrics

from tnx import sharding as shd
from tnx import validation
from tnx.selection.xmas import baselines, data, finetune, model, pipeline, trajectory
from tnx.train import config as config_lib

DOCS = Path(__file__).resolve().parents[1] / "docs"
XMAS_VARIANTS = {  # method -> (attention mode key, XMASConfig changes, checkpoint slice)
    "xmas": ("main", {}, slice(None)),
    "xmas_random_within": ("main", {"within": "random"}, slice(None)),
    "xmas_unstable_first": ("main", {"within": "unstable"}, slice(None)),
    "xmas_last_checkpoint": ("main", {}, slice(-1, None)),
    "xmas_reference": ("reference", {}, slice(None)),
}
OTHER = ("random", "oracle", "el2n", "embed_cluster")


def _list(text: str, cast=str) -> list[Any]:
  return [cast(t.strip()) for t in str(text).split(",") if t.strip()]


def _tc(c) -> finetune.TrainConfig:
  return finetune.TrainConfig(**c.to_dict())


def _xmas_config(c) -> pipeline.XMASConfig:
  x = c.xmas
  return pipeline.XMASConfig(mode=x.mode, top_k=x.top_k, trajectory=x.trajectory,
                             num_clusters=x.num_clusters, kmeans_iters=x.kmeans_iters,
                             min_cluster_size=x.min_cluster_size, batch_size=x.batch_size,
                             n_image=data.N_IMAGE_TOKENS)


def prepare(c, workdir: Path, resume: bool, mesh) -> dict[str, Any]:
  """Pool, test set, proxy, trajectories and baseline features (cached in values.npz)."""
  dcfg = data.ShapesVQAConfig(density=c.data.density, noise=c.data.noise,
                              image_dim=c.data.image_dim, position_code=c.data.position_code,
                              dup_fraction=c.data.dup_fraction)
  pool = data.generate(c.data.seed, c.data.pool_size, dcfg)
  test = data.test_set(c.data.seed + 1, c.data.test_per_family, dcfg)
  cache = workdir / "values.npz"
  if resume and cache.exists():
    with np.load(cache) as z:
      return dict(dcfg=dcfg, pool=pool, test=test, **{k: z[k] for k in z.files},
                  timings=json.loads((workdir / "timings.json").read_text()))
  pcfg = model.for_shapes_vqa(dcfg, d_model=c.proxy.d_model, n_layers=c.proxy.n_layers,
                              n_heads=c.proxy.n_heads)
  n = len(pool["tokens"])
  shutil.rmtree(workdir / "proxy", ignore_errors=True)
  t0 = time.perf_counter()
  aligned = stage1(c, dcfg, pcfg, c.seed, mesh)
  t_stage1 = time.perf_counter() - t0
  proxy = finetune.train(pcfg, pool, np.arange(n), c.seed, _tc(c.proxy.train), mesh=mesh,
                         checkpoint_dir=str(workdir / "proxy"),
                         num_checkpoints=c.proxy.num_checkpoints, init_params=aligned)
  t_proxy = time.perf_counter() - t0 - t_stage1
  checkpoints = finetune.load_checkpoints(proxy, pcfg, _tc(c.proxy.train))
  xcfg = _xmas_config(c)
  sharding = finetune.batch_sharding(mesh, xcfg.batch_size)
  out, timings = {}, {"proxy_stage1_s": t_stage1, "proxy_train_s": t_proxy,
                      "proxy_steps": len(proxy.losses)}
  for name, mode in (("main", xcfg.mode), ("reference", "reference")):
    ex = dataclasses.replace(xcfg.extract(), mode=mode)
    t0 = time.perf_counter()
    out[f"values_{name}"] = trajectory.trajectory_values(proxy.graphdef, checkpoints, pool, ex,
                                                         sharding=sharding)
    timings[f"trajectory_{name}_s"] = time.perf_counter() - t0
  out["el2n"], out["pooled"] = baselines.proxy_outputs(proxy.graphdef, checkpoints[-1], pool,
                                                       sharding=sharding)
  out["proxy_losses"] = np.asarray(proxy.losses)
  np.savez(cache, **out)
  (workdir / "timings.json").write_text(json.dumps(timings))
  return dict(dcfg=dcfg, pool=pool, test=test, timings=timings, **out)


def stage1(c, dcfg: data.ShapesVQAConfig, mcfg: model.VLMConfig, seed: int, mesh) -> Any:
  """Params after the stage-1 alignment run on caption items (None when it is off)."""
  if not c.stage1.num_items:
    return None
  caps = data.captions(c.stage1.seed, c.stage1.num_items, dcfg)
  return finetune.train(mcfg, caps, np.arange(len(caps["tokens"])), seed, _tc(c.stage1.train),
                        mesh=mesh).params


def choose(method: str, key, budget: float, prep: dict[str, Any], c) -> dict[str, Any]:
  """Indices of `method` at `budget` (and cluster labels where the method has them)."""
  pool = prep["pool"]
  n = len(pool["tokens"])
  if method == "random":
    return {"indices": baselines.random_subset(key, n, budget)}
  if method == "oracle":
    return {"indices": baselines.family_balanced(key, pool["family"], budget)}
  if method == "el2n":
    return {"indices": baselines.top_scores(prep["el2n"], budget)}
  if method == "embed_cluster":
    idx, labels = baselines.embedding_clusters(key, prep["pooled"], budget,
                                               c.xmas.num_clusters or
                                               pipeline.default_num_clusters(n),
                                               num_iters=c.xmas.kmeans_iters)
    return {"indices": idx, "labels": labels}
  mode, changes, ckpts = XMAS_VARIANTS[method]
  cfg = dataclasses.replace(_xmas_config(c), **changes)
  sel = pipeline.select_from_values(key, prep[f"values_{mode}"][:, ckpts], pool["has_image"],
                                    budget, cfg)
  return {"indices": sel.indices, "labels": sel.labels_N}


def cluster_stats(labels: np.ndarray, pool: dict[str, np.ndarray]) -> dict[str, float]:
  """NMI with the task families, and the share of duplicate groups kept in one cluster."""
  src = pool["source"]
  groups = [np.flatnonzero(src == s) for s in np.unique(src)]
  groups = [g for g in groups if len(g) > 1]
  together = np.mean([len(set(labels[g].tolist())) == 1 for g in groups]) if groups else 0.0
  return {"nmi_family": float(sk_metrics.normalized_mutual_info_score(pool["family"], labels)),
          "duplicates_together": float(together)}


def target_config(c, prep) -> model.VLMConfig:
  return model.for_shapes_vqa(prep["dcfg"], d_model=c.target.d_model,
                              n_layers=c.target.n_layers, n_heads=c.target.n_heads)


def run_target(c, prep, indices: np.ndarray, seed: int, mesh, init_params: Any
               ) -> tuple[np.ndarray, float]:
  t0 = time.perf_counter()
  trained = finetune.train(target_config(c, prep), prep["pool"], indices, seed,
                           _tc(c.target.train), mesh=mesh, init_params=init_params)
  acc = finetune.accuracy_per_family(trained, prep["test"], len(data.FAMILIES), mesh=mesh)
  return acc, time.perf_counter() - t0


def summarize(runs: list[dict[str, Any]], methods: list[str], budgets: list[float]
              ) -> dict[str, Any]:
  full = np.mean([r["accuracy"] for r in runs if r["method"] == "full"], axis=0)
  scored = full > 0   # a family the full-pool target never answers has no relative score
  table = {}
  for m in methods:
    for b in budgets:
      rs = [r for r in runs if r["method"] == m and r["budget"] == b]
      if not rs:
        continue
      acc = np.asarray([r["accuracy"] for r in rs])
      arp = 100.0 * np.mean(acc[:, scored] / full[scored], axis=1)
      table[f"{m}@{b}"] = {"method": m, "budget": b, "arp_mean": float(arp.mean()),
                           "arp_std": float(arp.std()), "accuracy_mean": acc.mean(0).tolist(),
                           "seeds": len(rs)}
  return {"full_accuracy": full.tolist(), "arp_families": np.flatnonzero(scored).tolist(),
          "table": table}


def markdown(summary: dict[str, Any], methods: list[str], budgets: list[float],
             extra: dict[str, Any]) -> str:
  fam = data.FAMILIES
  lines = ["| method | " + " | ".join(f"{int(100 * b)}%" for b in budgets) + " |",
           "|---|" + "---|" * len(budgets)]
  for m in methods:
    cells = []
    for b in budgets:
      e = summary["table"].get(f"{m}@{b}")
      cells.append(f"{e['arp_mean']:.1f} ± {e['arp_std']:.1f}" if e else "")
    lines.append(f"| {m} | " + " | ".join(cells) + " |")
  lines += ["", "Per-family accuracy (mean over seeds); full pool: " + ", ".join(
      f"{f} {a:.3f}" for f, a in zip(fam, summary["full_accuracy"])), "",
      "| method | budget | " + " | ".join(fam) + " |", "|---|---|" + "---|" * len(fam)]
  for m in methods:
    for b in budgets:
      e = summary["table"].get(f"{m}@{b}")
      if e:
        lines.append(f"| {m} | {int(100 * b)}% | " + " | ".join(
            f"{a:.3f}" for a in e["accuracy_mean"]) + " |")
  lines += ["", "```", json.dumps(extra, indent=1), "```"]
  return "\n".join(lines)


def plot(summary: dict[str, Any], methods: list[str], budgets: list[float], path: Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for m in methods:
    es = [summary["table"].get(f"{m}@{b}") for b in budgets]
    xs = [100 * b for b, e in zip(budgets, es) if e]
    ys = [e["arp_mean"] for e in es if e]
    err = [e["arp_std"] for e in es if e]
    ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=m,
                linestyle="-" if m.startswith("xmas") else "--")
  ax.axhline(100, color="grey", lw=0.8)
  ax.set_xlabel("budget (% of the pool)")
  ax.set_ylabel("ARP vs full-pool target (%)")
  ax.set_title("ShapesVQA: average relative performance")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
  c, resume = config_lib.parse_args(sys.argv[1:] if argv is None else argv, default="xmas")
  resume = resume or bool(c.train.resume)
  workdir = Path(c.workdir)
  log = workdir / "runs.jsonl"
  if log.exists() and not resume:
    raise SystemExit(f"{workdir} holds results already; pass --resume to finish the job, "
                     "remove it, or set --config.workdir")
  workdir.mkdir(parents=True, exist_ok=True)
  mesh = shd.make_mesh()
  methods, budgets = _list(c.experiment.methods), _list(c.experiment.budgets, float)
  for m in methods:
    if m not in OTHER and m not in XMAS_VARIANTS:
      raise ValueError(f"experiment.methods: unknown method {m!r}; expected some of "
                       f"{list(OTHER) + list(XMAS_VARIANTS)}")
  seeds = range(validation.positive_int("experiment.seeds", c.experiment.seeds))
  t_start = time.perf_counter()
  prep = prepare(c, workdir, resume, mesh)
  n = len(prep["pool"]["tokens"])
  print(f"pool N={n}, families {np.bincount(prep['pool']['family']).tolist()}; proxy "
        f"{prep['timings']['proxy_train_s']:.0f}s", flush=True)
  runs = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
  done = {(r["method"], r["budget"], r["seed"]) for r in runs}
  stats, aligned = {}, {}
  jobs = [("full", 1.0, s) for s in seeds] + [(m, b, s) for s in seeds for b in budgets
                                              for m in methods]
  for method, budget, seed in jobs:
    key = jax.random.fold_in(jax.random.key(c.seed), 1000 * seed + int(1000 * budget))
    picked = {"indices": np.arange(n)} if method == "full" else choose(method, key, budget,
                                                                       prep, c)
    if "labels" in picked and seed == 0 and budget == budgets[0]:
      stats[method] = cluster_stats(picked["labels"], prep["pool"])
    if (method, budget, seed) in done:
      continue
    if seed not in aligned:   # one stage-1 target per seed, shared by all its subsets
      aligned[seed] = stage1(c, prep["dcfg"], target_config(c, prep), 100 + seed, mesh)
    acc, wall = run_target(c, prep, picked["indices"], 100 + seed, mesh, aligned[seed])
    fam = np.bincount(prep["pool"]["family"][picked["indices"]], minlength=5)
    r = {"method": method, "budget": budget, "seed": seed, "size": int(len(picked["indices"])),
         "families": fam.tolist(), "accuracy": acc.tolist(), "wall_s": wall}
    runs.append(r)
    with open(log, "a") as f:
      f.write(json.dumps(r) + "\n")
    print(f"{method:22s} {budget:4.2f} seed {seed}: acc {np.round(acc, 3).tolist()} "
          f"families {fam.tolist()} ({wall:.0f}s)", flush=True)
  summary = summarize(runs, methods, budgets)
  full_wall = float(np.mean([r["wall_s"] for r in runs if r["method"] == "full"]))
  t = prep["timings"]
  extra = {"pool_size": n, "pool_families": np.bincount(prep["pool"]["family"]).tolist(),
           "cluster_stats": stats, "timings": t, "full_target_train_s": full_wall,
           "selection_cost_vs_full_target": (t["proxy_train_s"] + t["trajectory_main_s"]) /
           full_wall, "total_wall_s": time.perf_counter() - t_start}
  result = {"summary": summary, "extra": extra, "config": c.to_dict()}
  (workdir / "results.json").write_text(json.dumps(result, indent=1))
  md = markdown(summary, methods, budgets, extra)
  (workdir / "results.md").write_text(md + "\n")
  plot(summary, methods, budgets, workdir / "arp.png")
  print(md, flush=True)
  if c.docs:
    shutil.copy(workdir / "arp.png", DOCS / "selection_xmas_arp.png")
    shutil.copy(workdir / "results.md", DOCS / "selection_xmas_results.md")
  return result


if __name__ == "__main__":
  main()
