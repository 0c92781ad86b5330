"""Main job: train a Titans LM (chunk 8) and a TNT LM of equal parameter count on the Python
standard library's source (byte level), TNT in two stages, and compare speed and quality.

  python -m examples.tnt_lm            # the full job (~10 min on a 2-core CPU)
  python -m examples.tnt_lm --smoke    # tiny models, 3+3+2 steps: ~1.5 min CPU (compilation)
  python -m examples.tnt_lm --config.job.stage1_steps=1000 --config.workdir=runs/long
  python -m examples.tnt_lm --resume   # after an interruption: finish the runs not yet done
  python -m examples.tnt_lm --docs     # also copy curves.png to docs/tnt_lm_curves.png

Writes under config.workdir (a local path or a URL): one run directory per model
(checkpoints, metrics.jsonl, tb/, loss.png), results.json, results.md and curves.png.
Config: tnx/configs/tnt_lm.py.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import ml_collections as mlc
from flax import nnx

from tnx import sharding
from tnx.models import LM, available_families, param_counts
from tnx.train import config as config_lib
from tnx.train import metrics as metrics_lib
from tnx.train import paths, trainer

DOCS = Path(__file__).resolve().parents[1] / "docs"


def model_cfg(base: mlc.ConfigDict, name: str, **changes: Any) -> mlc.ConfigDict:
  """A copy of `base` for run `name` with dotted-key changes ('model.d_model' -> value)."""
  cfg = copy.deepcopy(base)
  cfg.workdir = str(paths.path(base.workdir) / name)
  for key, value in changes.items():
    *parents, leaf = key.split("__")
    node = cfg
    for p in parents:
      node = node[p]
    node[leaf] = value
  return cfg


def count(cfg: mlc.ConfigDict) -> int:
  lm = config_lib.validate(cfg)
  return param_counts(nnx.eval_shape(lambda: LM(lm, rngs=nnx.Rngs(0))))["total"]


def match_params(cfg: mlc.ConfigDict, target: int) -> mlc.ConfigDict:
  """Sets cfg.model.mlp_hidden so that the parameter count is closest to `target`."""
  cfg.model.mlp_hidden = 0
  lm = config_lib.validate(cfg)
  best = None
  for hidden in range(max(8, lm.hidden // 2), lm.hidden * 3, 4):
    cfg.model.mlp_hidden = hidden
    gap = abs(count(cfg) - target)
    if best is None or gap < best[0]:
      best = (gap, hidden)
    elif gap > best[0]:
      break
  cfg.model.mlp_hidden = best[1]
  return cfg


def build_configs(base: mlc.ConfigDict) -> dict[str, mlc.ConfigDict]:
  job = base.job
  steps1 = job.stage1_steps
  have_tnt = "tnt" in available_families()
  runs: dict[str, mlc.ConfigDict] = {}
  if have_tnt:
    tnt = model_cfg(base, "tnt_stage1", model__mixers="tnt", train__steps=steps1)
    mem = tnt.model.memory.tnt
    mem.global_chunk_size, mem.shard_length = job.tnt_global_chunk, job.tnt_shard_length
    mem.local_chunk_sizes = tuple(int(c) for c in config_lib.split_list(job.tnt_local_chunks))
    stage2_chunks = tuple(int(c) for c in config_lib.split_list(job.stage2_local_chunks))
    if job.tnt_sweep:
      tnt.train.chunk_sweep = ",".join(str(c) for c in sorted({mem.local_chunk_sizes[0],
                                                                stage2_chunks[0]}))
    target = count(tnt)
  else:
    target = None
  baseline = job.baseline if have_tnt else "attention"
  base_cfg = model_cfg(base, baseline, model__mixers=baseline, train__steps=steps1)
  if baseline.startswith("titans"):
    base_cfg.model.memory.titans.chunk_size = job.titans_chunk
    base_cfg.train.chunk_sweep = job.titans_sweep
  runs[baseline] = match_params(base_cfg, target) if target else base_cfg
  if have_tnt:
    runs["tnt_stage1"] = tnt
    s2 = model_cfg(base, "tnt_stage2", model__mixers="tnt", train__steps=job.stage2_steps,
                   train__init_from=tnt.workdir)
    s2.model.memory.tnt = copy.deepcopy(tnt.model.memory.tnt)
    s2.model.memory.tnt.local_chunk_sizes = stage2_chunks
    s2.opt.peak_lr = base.opt.peak_lr * job.stage2_lr_scale
    s2.opt.warmup_steps = min(base.opt.warmup_steps, max(1, job.stage2_steps // 5))
    s2.train.chunk_sweep = ""
    runs["tnt_stage2"] = s2
  else:
    # Without TNT: Titans (chunk 8) against an attention baseline of equal size.
    t = model_cfg(base, "titans", model__mixers="titans", train__steps=steps1)
    t.model.memory.titans.chunk_size = job.titans_chunk
    t.train.chunk_sweep = job.titans_sweep
    runs["titans"] = t
    runs[baseline] = match_params(base_cfg, count(t))
  return runs


def table(rows: list[dict[str, Any]]) -> str:
  head = ("| model | chunk | params | train tokens/s | wall (s) | val bits/byte |\n"
          "|---|---|---|---|---|---|")
  lines = [head]
  for r in rows:
    lines.append(f"| {r['name']} | {r['chunk']} | {r['params']:,} | {r['tokens_per_s']:,.0f} | "
                 f"{r['wall_s']:.1f} | {r['bpb']:.4f} |")
  return "\n".join(lines)


def main(argv: list[str]) -> dict[str, Any]:
  sharding.maybe_initialize_distributed()
  base, resume = config_lib.parse_args(argv, default="tnt_lm")
  runs = build_configs(base)
  out = paths.path(base.workdir)
  out.mkdir(parents=True, exist_ok=True)
  results, rows, curves = {}, [], {}
  for name, cfg in runs.items():
    print(f"\n=== {name}: {cfg.model.mixers}, {cfg.train.steps} steps -> {cfg.workdir}",
          flush=True)
    started = (paths.path(cfg.workdir) / "checkpoints").exists()
    if started and not resume:
      raise SystemExit(f"{cfg.workdir} exists already; pass --resume to finish the job, "
                       "remove it, or set --config.workdir")
    cfg.train.resume = started  # a finished run resumes at its last step: evaluation only
    s = trainer.train(cfg)
    mem = cfg.model.memory
    chunk = {"tnt": lambda: "C_L=" + ",".join(map(str, mem.tnt.local_chunk_sizes)) +
             f" C_G={mem.tnt.global_chunk_size} S_L={mem.tnt.shard_length}",
             "titans": lambda: f"C={mem.titans.chunk_size}"}.get(
                 cfg.model.mixers.split("_")[0], lambda: "-")()
    results[name] = {k: v for k, v in s.items() if k not in ("state", "graphdef")}
    results[name]["chunk"] = chunk
    rows.append({"name": name, "chunk": chunk, "params": s["params"]["total"],
                 "tokens_per_s": s["tokens_per_s"], "wall_s": s["train_wall_s"],
                 "bpb": s["eval"]["bits_per_byte"]})
    losses = s["train_losses"]
    offset = base.job.stage1_steps if name == "tnt_stage2" else 0
    curves[name] = ([st + offset for st, _ in losses], [lo for _, lo in losses])
  by = {r["name"]: r for r in rows}
  summary = {"table": rows}
  if "tnt_stage1" in by:
    b = by[next(n for n in by if not n.startswith("tnt"))]
    t1, t2 = by["tnt_stage1"], by["tnt_stage2"]
    summary["speedup_tokens_per_s"] = t1["tokens_per_s"] / b["tokens_per_s"]
    summary["tnt_total_wall_s"] = t1["wall_s"] + t2["wall_s"]
    summary["baseline_wall_s"] = b["wall_s"]
  results["summary"] = summary
  text = table(rows)
  if "speedup_tokens_per_s" in summary:
    text += (f"\n\nTNT stage-1 training speedup over {b['name']} (tokens/s): "
             f"{summary['speedup_tokens_per_s']:.2f}x")
  for name, r in results.items():
    if isinstance(r, dict) and r.get("chunk_sweep"):
      sweep = ", ".join(f"{c}: {m['bits_per_byte']:.4f}" for c, m in r["chunk_sweep"].items())
      text += f"\n{name} chunk-size sweep (eval chunk: bits/byte): {sweep}"
  print("\n" + text, flush=True)
  paths.write_text(out / "results.json", json.dumps(results, indent=1, default=str))
  paths.write_text(out / "results.md", text + "\n")
  metrics_lib.plot_curves(curves, out / "curves.png", ylabel="train loss (nats/byte)",
                          title="Titans vs TNT on the stdlib corpus")
  if base.docs:
    (DOCS / "tnt_lm_curves.png").write_bytes((out / "curves.png").read_bytes())
    print(f"copied curves.png to {DOCS / 'tnt_lm_curves.png'}")
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
