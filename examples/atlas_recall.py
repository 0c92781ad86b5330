"""Recall of trained LMs on MQAR and needle-in-a-haystack at equal parameter count.

Models (`MODELS`, each a change to the config's model section; `job.models` picks them):
the ATLAS family as pure memory LMs (every layer's mixer is the memory): Titans (LMM, MLP
memory on the raw keys, momentum, forget gate, window 1), OmegaNet (Omega rule with window
c = 4, polynomial features, GD), Atlas (the same with Muon: momentum + Newton-Schulz-5) and
DeepTransformer (Hebbian loss, truncated exponential features, no retention), arXiv 2505.23735
Sec. 3-5; and the TNT comparison (examples.tnt_recall): TTT-MLP, attention, sliding-window
attention, TNT and its ablations. Their outer MLP widths F are set so that all have the
parameter count of the largest. Every model is trained once per seed in `job.seeds` (the
seed of the model's initialization; data and held-out set stay fixed).

Tasks (tnx.train.data): MQAR with `job.pairs` key-value pairs at a fixed L (one training run
per pair count), and a single needle trained at L = data.seq_len and evaluated at
`job.needle_lengths` (L/2 ... 4L). Recall = exact-match (argmax) accuracy on the query
positions (the positions with loss weight > 0) of a fixed held-out set: the first
`train.eval_batches` batches of the validation split (its own seed). Also reported: the share
of sequences whose every query is recalled.

  python -m examples.atlas_recall            # the job (config: tnx/configs/atlas_recall.py)
  python -m examples.atlas_recall --smoke    # the wiring, 2.5 min CPU (compilation)
  python -m examples.atlas_recall --docs     # also copy atlas_recall.png into docs/

Writes under config.workdir: one run directory per seed, model and task
(seed<s>/<model>/<task>: checkpoints, metrics.jsonl, summary.json), results.json, results.md
and the figure `job.figure`.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
from flax import nnx

from examples.tnt_experiments import fmt, four_locals, spread
from tnx.models import FAMILIES, LM, param_counts
from tnx.train import config as config_lib
from tnx.train import data as data_lib
from tnx.train import paths, trainer

DOCS = Path(__file__).resolve().parents[1] / "docs"
DIVERGED = "diverged.txt"  # in a run directory: the non-finite step that ended the run
UNRESET = 1 << 20  # tnt_no_reset's S_L: beyond every sequence (a multiple of every C_L)


def _mixer(mixer: str, **memory: Any) -> Callable[[mlc.ConfigDict], None]:
  """A model: the LM with `mixer` in every layer and these fields of its memory family (the
  mixer's name, or its prefix: ttt_mlp -> ttt)."""
  family = mixer if mixer in FAMILIES else mixer.split("_")[0]
  if memory and family not in FAMILIES:
    raise ValueError(f"mixer {mixer!r} has no memory family to set {sorted(memory)} in; "
                     f"expected one of {sorted(FAMILIES)}")

  def apply(cfg: mlc.ConfigDict) -> None:
    cfg.model.mixers = mixer
    for key, value in memory.items():
      cfg.model.memory[family][key] = value
  return apply


def _tnt_locals(cfg: mlc.ConfigDict) -> None:
  """TNT with four local memories {C/4, C/2, C, 2C} around the config's C_L (as
  examples.tnt_experiments' tnt_L4)."""
  _mixer("tnt", local_chunk_sizes=four_locals(cfg.model.memory.tnt.local_chunk_sizes[0]))(cfg)


def _swa(cfg: mlc.ConfigDict) -> None:
  """Sliding-window attention whose window is TNT's shard length S_L."""
  _mixer("swa")(cfg)
  cfg.model.window = cfg.model.memory.tnt.shard_length


# name -> the change that makes the config's model this one
MODELS: dict[str, Callable[[mlc.ConfigDict], None]] = {
    "titans": _mixer("titans"),
    "omeganet": _mixer("atlas", variant="omeganet"),
    "atlas": _mixer("atlas", variant="atlas"),
    "deep_transformer": _mixer("atlas", variant="deep_transformer"),
    "ttt_mlp": _mixer("ttt_mlp"),
    "attention": _mixer("attention"),
    "swa": _swa,
    "tnt": _mixer("tnt"),
    "tnt_L4": _tnt_locals,
    "tnt_no_global": _mixer("tnt", use_global=False),
    "tnt_no_qk": _mixer("tnt", qk_projection=False),
    "tnt_no_reset": _mixer("tnt", shard_length=UNRESET),
}


# ---------------------------------------------------------------------- the metric
def recall_counts(pred_BxL: np.ndarray, targets_BxL: np.ndarray, weights_BxL: np.ndarray
                  ) -> dict[str, int]:
  """Counts of exact recall at the query positions (weight > 0): correct queries, queries,
  sequences with every query correct, sequences with at least one query."""
  query = np.asarray(weights_BxL) > 0
  hit = (np.asarray(pred_BxL) == np.asarray(targets_BxL)) & query
  has_query = query.any(-1)
  all_hit = (hit.sum(-1) == query.sum(-1)) & has_query
  return {"correct": int(hit.sum()), "queries": int(query.sum()),
          "sequences_correct": int(all_hit.sum()), "sequences": int(has_query.sum())}


def recall(graphdef: Any, params: Any, rest: Any, batches: list[dict[str, np.ndarray]]
           ) -> dict[str, float]:
  """Query accuracy and whole-sequence exact match of the model over `batches`."""
  predict = jax.jit(lambda p, r, x: jnp.argmax(nnx.merge(graphdef, p, r)(x), axis=-1))
  total = dict.fromkeys(("correct", "queries", "sequences_correct", "sequences"), 0)
  for b in batches:
    counts = recall_counts(np.asarray(predict(params, rest, b["inputs"])), b["targets"],
                           b["weights"])
    total = {k: total[k] + counts[k] for k in total}
  if not total["queries"]:
    raise ValueError("recall batches hold no query positions (all weights are 0)")
  return {"accuracy": total["correct"] / total["queries"],
          "sequence_accuracy": total["sequences_correct"] / total["sequences"],
          "queries": total["queries"]}


# ---------------------------------------------------------------------- configs
def count(cfg: mlc.ConfigDict) -> int:
  lm = config_lib.validate(cfg)
  return param_counts(nnx.eval_shape(lambda: LM(lm, rngs=nnx.Rngs(0))))["total"]


def model_config(base: mlc.ConfigDict, name: str) -> mlc.ConfigDict:
  if name not in MODELS:
    raise ValueError(f"job.models: {name!r} is not a model; expected names from "
                     f"{sorted(MODELS)}")
  cfg = copy.deepcopy(base)
  MODELS[name](cfg)
  if cfg.model.mixers == "atlas":
    variant = cfg.model.memory.atlas.variant
    bounds = dict(item.split(":") for item in data_lib.config_list(base.job.atlas_lr_max))
    if variant in bounds:
      cfg.model.memory.atlas.lr_max = float(bounds[variant])
  return cfg


def match_width(cfg: mlc.ConfigDict, target: int) -> mlc.ConfigDict:
  """Sets cfg.model.mlp_hidden to the F >= 1 whose count is closest to `target`: the count is
  affine in F (3 D F weights per layer's gated MLP), so two counts give it exactly."""
  at = {}
  for f in (8, 16):
    cfg.model.mlp_hidden = f
    at[f] = count(cfg)
  slope = (at[16] - at[8]) / 8
  cfg.model.mlp_hidden = max(1, round(8 + (target - at[8]) / slope))
  return cfg


def build_models(base: mlc.ConfigDict) -> dict[str, mlc.ConfigDict]:
  """{model name: config} with equal parameter counts: the largest default count among the
  models of `job.match_to` (empty: of job.models), so that a job running some of the models
  builds them as the whole job does."""
  names = list(data_lib.config_list(base.job.models))
  cfgs = {n: model_config(base, n) for n in names}
  sizing = list(data_lib.config_list(base.job.match_to)) or names
  for n in sizing:
    if n not in MODELS:
      raise ValueError(f"job.match_to: {n!r} is not a model; expected names from "
                       f"{sorted(MODELS)}")
  target = max(count(cfgs[n] if n in cfgs else model_config(base, n)) for n in sizing)
  return {n: match_width(c, target) if count(c) != target else c for n, c in cfgs.items()}


def task_config(cfg: mlc.ConfigDict, model: str, task: str, pairs: int = 0, seed: int = 0
                ) -> mlc.ConfigDict:
  """The run of `model` on `task` at init seed `seed`: <workdir>/seed<s>/<model>/<task>."""
  run = copy.deepcopy(cfg)
  run.seed = seed
  run.data.source = task
  if task == "mqar":
    run.data.mqar_pairs = pairs
  run.workdir = str(paths.path(cfg.workdir) / f"seed{seed}" / model
                    / (f"mqar_{pairs}" if pairs else task))
  return run


# ---------------------------------------------------------------------- runs
def finished(workdir: str) -> bool:
  """Whether the run in `workdir` ended (its summary.json), or diverged and was restarted
  (a `<workdir>_lr<x>` sibling; train_and_recall finishes the chain)."""
  where = paths.path(workdir)
  return (where / "summary.json").exists() or any(where.parent.glob(where.name + "_lr*"))


def train_and_recall(cfg: mlc.ConfigDict, resume: bool, lengths: list[int]
                     ) -> dict[str, Any]:
  """Trains one run (or, with `resume`, finishes it) and measures its recall: on the trainer's
  fixed validation batches, and for the needle at every length in `lengths`."""
  started = (paths.path(cfg.workdir) / "checkpoints").exists()
  if started and not resume:
    raise SystemExit(f"{cfg.workdir} exists already; pass --resume to finish the job, remove "
                     "it, or set --config.workdir")
  cfg.train.resume = started
  t0 = time.perf_counter()
  failures = []
  while True:
    marker = paths.path(cfg.workdir) / DIVERGED
    if resume and marker.exists():  # diverged in an earlier job: follow its restart
      failures.append(marker.read_text())
    else:
      try:
        s = trainer.train(cfg)
        break
      except FloatingPointError as e:  # a non-finite step: the trainer's recovery, a fresh
        failures.append(f"peak_lr {cfg.opt.peak_lr:g}: {str(e).split(';')[0]}")  # start at a
        paths.write_text(marker, failures[-1])             # lower lr, at most nan_retries
    if len(failures) > cfg.job.nan_retries:                # times
      return {"diverged": failures, "wall_s": time.perf_counter() - t0}
    cfg.opt.peak_lr *= cfg.train.nan_lr_scale
    cfg.workdir = f"{cfg.workdir}_lr{cfg.opt.peak_lr:g}"
    cfg.train.resume = (paths.path(cfg.workdir) / "checkpoints").exists()
  lm = config_lib.validate(cfg)
  params, rest = s["state"]["params"], s["state"]["rest"]
  b, n = cfg.data.global_batch, cfg.train.eval_batches
  out = {"params": s["params"]["total"], "mlp_hidden": lm.hidden, "peak_lr": cfg.opt.peak_lr,
         "restarts": failures,
         "train_loss": s["train_losses"][-1][1] if s["train_losses"] else None,
         "eval_loss": s["eval"]["loss"], "trainer_accuracy": s["eval"]["accuracy"],
         "train_step_s": s.get("train_step_s"), "compile_s": s.get("compile_s")}
  for length in lengths or [cfg.data.seq_len]:
    src = data_lib.make_source(cfg.data, length, lm.vocab_size, "validation")
    out[f"L={length}"] = recall(s["graphdef"], params, rest, data_lib.eval_batches(src, b, n))
  out["wall_s"] = time.perf_counter() - t0
  return out


def cell(runs: list[dict[str, Any] | None], key: str) -> str:
  """One seed: 'accuracy (sequences)'; several: 'mean [min, max] (mean sequences)' over the
  seeds, '(k/n seeds)' when some are missing and '(j non-finite)' for diverged ones. One '*'
  per restart at a lower lr."""
  got = [r for r in runs if r is not None]
  if not got:
    return "-"  # not run (an interrupted job's results.json)
  ok = [r for r in got if "diverged" not in r]
  mark = "*" * sum(len(r.get("restarts", [])) for r in ok)
  if len(runs) == 1:
    if not ok:
      return "diverged"
    m = ok[0][key]
    return f"{100 * m['accuracy']:.1f} ({100 * m['sequence_accuracy']:.0f}){mark}"
  acc = [None if r is None else math.nan if "diverged" in r else 100 * r[key]["accuracy"]
         for r in runs]
  if not ok:
    return fmt(spread(acc))
  seq = np.mean([100 * r[key]["sequence_accuracy"] for r in ok])
  return f"{fmt(spread(acc))} ({seq:.0f}){mark}"


def table(results: dict[str, dict[str, list[Any]]], pairs: list[int], lengths: list[int],
          seq_len: int) -> str:
  """Markdown: one row per model, its recall per MQAR pair count and needle length over the
  seeds (results[model][task] = one run per seed, None where not run)."""
  head = (["model", "params", "F"] + [f"MQAR {p} pairs" for p in pairs]
          + [f"needle L={n}" for n in lengths] + ["train s"])
  lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
  for name, r in results.items():
    runs = [x for p in pairs for x in r.get(f"mqar_{p}", [])] + r.get("needle", [])
    ok = next((x for x in runs if x and "params" in x), {})
    row = [name, f"{ok.get('params', 0):,}", str(ok.get("mlp_hidden", "-"))]
    row += [cell(r.get(f"mqar_{p}", [None]), f"L={seq_len}") for p in pairs]
    row += [cell(r.get("needle", [None]), f"L={n}") for n in lengths]
    # the trainer's step seconds (kept in summary.json, so a reusing job shows the same)
    row.append(f"{sum(x.get('train_step_s') or 0 for x in runs if x):.0f}")
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines)


def _accuracy(runs: list[dict[str, Any] | None], key: str) -> tuple[float, float, float]:
  """(mean, min, max) recall in % over the finished, finite seeds (NaN if none)."""
  acc = [100 * r[key]["accuracy"] for r in runs if r and "diverged" not in r]
  return (float(np.mean(acc)), min(acc), max(acc)) if acc else (np.nan,) * 3


def plot(results: dict[str, dict[str, list[Any]]], pairs: list[int], lengths: list[int],
         seq_len: int, vocab: int, path: Any, title: str) -> None:
  """Recall accuracy against MQAR pairs (left) and needle length (right): the mean over
  seeds, the bars spanning min to max."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)

  def draw(ax: Any, xs: list[int], stats: list[tuple[float, float, float]], name: str) -> None:
    mean, lo, hi = (np.array(v) for v in zip(*stats)) if stats else ([], [], [])
    ax.errorbar(xs, mean, yerr=[mean - lo, hi - mean] if len(xs) else None, marker="o",
                capsize=3, label=name)

  for name, r in results.items():
    draw(ax1, pairs, [_accuracy(r.get(f"mqar_{p}", []), f"L={seq_len}") for p in pairs], name)
    draw(ax2, lengths, [_accuracy(r.get("needle", []), f"L={n}") for n in lengths], name)
  ax1.axhline(200 / vocab, color="gray", ls=":", lw=0.8, label=f"chance (1/{vocab // 2})")
  ax2.axhline(400 / vocab, color="gray", ls=":", lw=0.8, label=f"chance (1/{vocab // 4})")
  ax2.axvline(seq_len, color="gray", ls="--", lw=0.8, label="training length")
  for ax, xs in ((ax1, pairs), (ax2, lengths)):
    if xs:  # a job without MQAR runs (job.pairs empty) draws an empty left panel
      ax.set_xscale("log", base=2)
  ax1.set_xlabel(f"MQAR key-value pairs (L = {seq_len})")
  ax2.set_xlabel("needle sequence length L")
  ax1.set_ylabel("recall accuracy on held-out queries (%)")
  for ax in (ax1, ax2):
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(title)
  fig.tight_layout()
  paths.save_figure(fig, path, dpi=120)
  plt.close(fig)


def main(argv: list[str] | None = None, default: str = "atlas_recall") -> dict[str, Any]:
  base, resume = config_lib.parse_args(sys.argv[1:] if argv is None else argv,
                                       default=default)
  seeds = [int(s) for s in data_lib.config_list(base.job.seeds)]
  if not seeds:
    raise ValueError("job.seeds is empty; expected a comma list of seeds such as '0,1,2'")
  out = paths.path(base.workdir)
  out.mkdir(parents=True, exist_ok=True)
  if base.job.compile_cache and paths.is_local(out):
    jax.config.update("jax_compilation_cache_dir", str(out / "jax_cache"))
  pairs = [int(p) for p in data_lib.config_list(base.job.pairs)]
  lengths = [int(n) for n in data_lib.config_list(base.job.needle_lengths)]
  t0 = time.perf_counter()
  models = build_models(base)
  tasks = [("mqar", p) for p in pairs] + [("needle", 0)]
  results: dict[str, dict[str, list[Any]]] = {
      name: {f"mqar_{p}" if p else "needle": [None] * len(seeds) for _, p in tasks}
      for name in models}
  for i, seed in enumerate(seeds):  # a whole seed before the next: partial jobs stay useful
    for name, cfg in models.items():
      for task, p in tasks:
        run = task_config(cfg, name, task, p, seed)
        if base.job.reuse_only and not finished(run.workdir):
          continue  # tabulate what other jobs ran: reported as not run ("-")
        print(f"\n=== {name} {task} {p or ''} seed {seed} -> {run.workdir}", flush=True)
        key = f"mqar_{p}" if p else "needle"
        r = train_and_recall(run, resume or base.job.reuse_only,
                             lengths if task == "needle" else [])
        results[name][key][i] = dict(r, seed=seed)
        print(f"=== {name} {key} seed {seed}: {json.dumps(r, default=str)}", flush=True)
        paths.write_text(out / "results.json", json.dumps({"results": results}, default=str))
  wall = time.perf_counter() - t0
  text = table(results, pairs, lengths, base.data.seq_len)
  v = base.model.vocab_size
  spread_text = ("" if len(seeds) == 1 else
                 f"Mean [min, max] over the init seeds {', '.join(map(str, seeds))} (one run "
                 "each; data and held-out set fixed); in brackets the mean share of sequences "
                 "with every query recalled (%). ")
  text += (f"\n\nRecall accuracy (%) on the held-out queries ({base.train.eval_batches} "
           f"batches of {base.data.global_batch})"
           + (", in brackets the share of sequences with every query recalled (%). "
              if len(seeds) == 1 else ". ") + spread_text +
           f"{base.train.steps} steps of batch "
           f"{base.data.global_batch} per run, L = {base.data.seq_len}, "
           f"{base.data.mqar_queries} MQAR queries per sequence; needle trained at "
           f"L = {base.data.seq_len}. Chance: 1/{v // 2} (MQAR values), 1/{v // 4} (needle "
           "values). * = restarted from scratch at peak_lr x train.nan_lr_scale after a "
           "non-finite step (results.json: restarts). train s = the training-step seconds "
           "of the row's runs, all seeds (compilation and evaluation excluded). "
           + (f"Seed {seeds[0]}. " if len(seeds) == 1 else "") +
           f"Job wall time {wall:.0f} s, load average "
           f"{os.getloadavg()[0]:.1f} at the end.")
  print("\n" + text, flush=True)
  summary = {"results": results, "pairs": pairs, "needle_lengths": lengths, "seeds": seeds,
             "seq_len": base.data.seq_len, "steps": base.train.steps, "wall_s": wall}
  paths.write_text(out / "results.json", json.dumps(summary, indent=1, default=str))
  paths.write_text(out / "results.md", text + "\n")
  plot(results, pairs, lengths, base.data.seq_len, base.model.vocab_size,
       out / base.job.figure, base.job.title)
  if base.docs:
    paths.copy_into([out / base.job.figure], DOCS)
    print(f"copied {base.job.figure} into {DOCS}")
  return summary


if __name__ == "__main__":
  main()
