"""TNT and Titans experiments at CPU scale on the main job's models (docs/tnt_lm.md).

  python -m examples.tnt_experiments --experiment=time_to_target  # Titans C and TNT C_L sweep
  python -m examples.tnt_experiments --experiment=chunk_sweep     # every model at every chunk
  python -m examples.tnt_experiments --experiment=quality         # bits/byte, ablations
  python -m examples.tnt_experiments --experiment=time_to_target --smoke

Config and the experiments' definitions: tnx/configs/tnt_experiments.py. Writes
<workdir>/<experiment>/{results.json, results.md, *.png} and one run directory per arm and
seed (<workdir>/time_to_target/<arm>/seed<s>); a run whose summary.json is complete is
reused, so an interrupted experiment continues where it stopped and chunk_sweep reuses the
stage-1 runs of time_to_target. Time = steps x the step time each arm's model takes when all
arms are timed round-robin after training (the runs themselves see different loads).
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from typing import Any

import ml_collections as mlc
import numpy as np

from examples import tnt_lm
from tnx import validation
from tnx.configs.tnt_experiments import EXPERIMENTS
from tnx.train import config as config_lib
from tnx.train import paths, trainer
from tnx.train import resume as resume_lib


def ints(text: Any) -> list[int]:
  return [int(t) for t in config_lib.split_list(text)]


def spread(values: list[float | None]) -> dict[str, Any]:
  """Mean, min and max over seeds of the finite values; n = how many, nonfinite = how many
  were NaN/inf (a diverged evaluation), None = not reached / not measured."""
  got = [v for v in values if v is not None and math.isfinite(v)]
  bad = sum(v is not None and not math.isfinite(v) for v in values)
  if not got:
    return {"mean": None, "min": None, "max": None, "n": 0, "of": len(values),
            "nonfinite": bad}
  return {"mean": float(np.mean(got)), "min": float(min(got)), "max": float(max(got)),
          "n": len(got), "of": len(values), "nonfinite": bad}


def fmt(s: dict[str, Any], spec: str = ".1f") -> str:
  """'mean [min, max]', with '(k/n seeds)' when some seeds did not get there and
  '(j non-finite)' when some diverged."""
  if s["n"] == 0:
    return f"non-finite ({s['nonfinite']}/{s['of']})" if s.get("nonfinite") else "not reached"
  text = f"{s['mean']:{spec}} [{s['min']:{spec}}, {s['max']:{spec}}]"
  if s["n"] < s["of"]:
    text += f" ({s['n']}/{s['of']} seeds)"
  return text + (f" ({s['nonfinite']} non-finite)" if s.get("nonfinite") else "")


def four_locals(chunk: int) -> tuple[int, int, int, int]:
  """The local chunks {C/4, C/2, C, 2C} of the 4-local TNT arms around C_L = `chunk`."""
  return max(1, chunk // 4), max(1, chunk // 2), chunk, 2 * chunk


def tnt_arm(where: mlc.ConfigDict, name: str, local_chunks: tuple[int, ...],
            **fields: Any) -> mlc.ConfigDict:
  """TNT stage 1 of the main job (C_G, S_L from `job`) with these local chunks and TNT
  fields (e.g. use_global=False)."""
  job = where.job
  cfg = tnt_lm.model_cfg(where, name, model__mixers="tnt", train__steps=job.stage1_steps,
                         train__chunk_sweep=where.exp.sweep_chunks)
  mem = cfg.model.memory.tnt
  mem.global_chunk_size, mem.shard_length = job.tnt_global_chunk, job.tnt_shard_length
  mem.local_chunk_sizes = tuple(local_chunks)
  for key, value in fields.items():
    mem[key] = value
  return cfg


def baseline_arm(where: mlc.ConfigDict, name: str, mixers: str, target: int,
                 **changes: Any) -> mlc.ConfigDict:
  """A non-TNT LM of the main job's size, its MLP widened to `target` parameters."""
  cfg = tnt_lm.model_cfg(where, name, model__mixers=mixers, train__steps=where.job.stage1_steps,
                         train__chunk_sweep="" if mixers in ("attention", "swa")
                         else where.exp.sweep_chunks, **changes)
  return tnt_lm.match_params(cfg, target)


def arm_configs(base: mlc.ConfigDict, root: Any) -> dict[str, mlc.ConfigDict]:
  """{arm: config without seed}: Titans at every exp.titans_chunks C and TNT stage 1 at
  every exp.tnt_local_chunks C_L, Titans' MLP widened to TNT's parameter count."""
  where = copy.deepcopy(base)
  where.workdir = str(root)
  arms = {f"tnt_CL{c}": tnt_arm(where, f"tnt_CL{c}", (c,)) for c in ints(base.exp.tnt_local_chunks)}
  target = tnt_lm.count(next(iter(arms.values())))
  for c in ints(base.exp.titans_chunks):
    arms[f"titans_C{c}"] = baseline_arm(where, f"titans_C{c}", "titans", target,
                                        model__memory__titans__chunk_size=c)
  return dict(sorted(arms.items(), key=lambda kv: (not kv[0].startswith("titans"),
                                                   int(kv[0].split("C")[-1].lstrip("L")))))


def seeded(cfg: mlc.ConfigDict, seed: int) -> mlc.ConfigDict:
  out = copy.deepcopy(cfg)
  out.seed = seed
  out.workdir = str(paths.path(cfg.workdir) / f"seed{seed}")
  return out


def run(cfg: mlc.ConfigDict, diverged_ok: bool = False) -> dict[str, Any]:
  """Trains `cfg` (or reuses its finished run) -> {summary fields, val_curve, chunk_sweep}.
  diverged_ok: a run stopped by the NaN guard returns bpb NaN and `diverged_at_step`
  instead of raising (the quality table reports it; a diverged run is not reused)."""
  done = paths.path(cfg.workdir) / "summary.json"
  if done.exists():
    summary = json.loads(done.read_text())
  else:
    print(f"\n=== {cfg.workdir}: {cfg.model.mixers}, seed {cfg.seed}", flush=True)
    cfg.train.resume = (paths.path(cfg.workdir) / "checkpoints").exists()
    try:
      summary = {k: v for k, v in trainer.train(cfg).items() if k not in ("state", "graphdef")}
    except resume_lib.NonFiniteError as e:
      if not diverged_ok:
        raise
      print(f"diverged: {e}", flush=True)  # a result of the arm: recorded as non-finite
      return {"val_curve": [], "chunk": tnt_lm.chunk_label(cfg)[0], "serial_depth": None,
              "params": tnt_lm.count(cfg), "bpb": float("nan"), "loss": float("nan"),
              "compile_s": None, "sweep_bpb": {}, "diverged_at_step": e.step}
    summary = json.loads(json.dumps(summary, default=str))  # the form summary.json has
  chunk, depth = tnt_lm.chunk_label(cfg)
  sweep = {int(c): m["bits_per_byte"] for c, m in summary.get("chunk_sweep", {}).items()}
  return {"val_curve": tnt_lm.val_curve(cfg), "chunk": chunk, "serial_depth": depth,
          "params": summary["params"]["total"], "bpb": summary["eval"]["bits_per_byte"],
          "loss": summary["eval"]["loss"], "compile_s": summary.get("compile_s"),
          "sweep_bpb": sweep}


def time_to_target(base: mlc.ConfigDict, out: Any) -> dict[str, Any]:
  arms = arm_configs(base, paths.path(base.workdir) / "time_to_target")
  seeds = ints(base.exp.seeds)
  runs = {a: [run(seeded(cfg, s)) for s in seeds] for a, cfg in arms.items()}
  base_arm = f"titans_C{base.exp.baseline_chunk}"
  if base_arm not in runs:
    raise ValueError(f"exp.baseline_chunk={base.exp.baseline_chunk} must be one of "
                     f"exp.titans_chunks={base.exp.titans_chunks!r}")
  target = float(base.job.target_loss) or max(min(p["loss"] for p in r["val_curve"])
                                              for r in runs[base_arm])
  step_s = tnt_lm.interleaved_step_times(
      {a: seeded(cfg, seeds[0]) for a, cfg in arms.items()}, int(base.job.timing_rounds),
      int(base.job.timing_steps))
  tokens_per_step = base.data.global_batch * base.data.seq_len
  rows, times = {}, {}
  for a, rs in runs.items():
    steps_to = [tnt_lm.first_reach(r["val_curve"], target, "step") for r in rs]
    times[a] = [None if n is None else n * step_s[a] for n in steps_to]
    rows[a] = {"chunk": rs[0]["chunk"], "serial_depth": rs[0]["serial_depth"],
               "params": rs[0]["params"], "step_s": step_s[a],
               "tokens_per_s": tokens_per_step / step_s[a],
               "time_to_target_s": spread(times[a]),
               "tokens_to_target": spread([None if n is None else n * tokens_per_step
                                           for n in steps_to]),
               "bpb": spread([r["bpb"] for r in rs]), "per_seed_bpb": [r["bpb"] for r in rs],
               "sweep_bpb": {c: spread([r["sweep_bpb"].get(c) for r in rs])
                             for c in ints(base.exp.sweep_chunks)}}
  for a, r in rows.items():  # per seed: the baseline's time over the arm's, same seed
    r["speedup_vs_baseline"] = spread([None if t is None or b is None else b / t
                                       for b, t in zip(times[base_arm], times[a])])
  lines = [f"Target: validation loss {target:.4f} nats/byte (the highest of {base_arm}'s best "
           f"validation losses over seeds {seeds}). Values: mean [min, max] over the seeds; "
           "the speedup is taken per seed (the baseline's time over the arm's).",
           "", "| arm | chunks | serial depth | params | ms/step (round-robin) | tokens/s | "
           f"time to target s | speedup vs {base_arm} | tokens to target | val bits/byte |",
           "|---" * 10 + "|"]
  for a, r in rows.items():
    lines.append(f"| {a} | {r['chunk']} | {r['serial_depth']} | {r['params']:,} | "
                 f"{1e3 * r['step_s']:.0f} | {r['tokens_per_s']:,.0f} | "
                 f"{fmt(r['time_to_target_s'])} | {fmt(r['speedup_vs_baseline'], '.2f')} | "
                 f"{fmt(r['tokens_to_target'], ',.0f')} | {fmt(r['bpb'], '.4f')} |")
  plot_curves(runs, step_s, target, out / "curves.png")
  return {"target_loss": target, "seeds": seeds, "rows": rows, "table": "\n".join(lines),
          "curves": {a: [r["val_curve"] for r in rs] for a, rs in runs.items()}}


def plot_curves(runs: dict[str, list[dict[str, Any]]], step_s: dict[str, float],
                target: float, path: Any) -> None:
  """Validation loss (mean over seeds, band = min..max) against round-robin-timed seconds
  (left) and tokens (right)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
  for a, rs in runs.items():
    n = min(len(r["val_curve"]) for r in rs)
    loss = np.array([[p["loss"] for p in r["val_curve"][:n]] for r in rs])
    steps = np.array([p["step"] for p in rs[0]["val_curve"][:n]])
    tokens = np.array([p["tokens"] for p in rs[0]["val_curve"][:n]])
    style = "-" if a.startswith("titans") else "--"
    for ax, x in ((axes[0], steps * step_s[a]), (axes[1], tokens)):
      line, = ax.plot(x, loss.mean(0), style, marker=".", label=a)
      ax.fill_between(x, loss.min(0), loss.max(0), color=line.get_color(), alpha=0.15)
  for ax, label in ((axes[0], "training seconds (round-robin step times)"),
                    (axes[1], "training tokens (bytes)")):
    ax.axhline(target, color="gray", ls=":", lw=0.8)
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("validation loss (nats/byte)")
  axes[1].legend(fontsize=7, ncol=2)
  fig.suptitle("Titans (solid) and TNT stage 1 (dashed): mean over seeds, band = min..max")
  fig.tight_layout()
  paths.save_figure(fig, path, dpi=110)
  plt.close(fig)


def stage2_config(base: mlc.ConfigDict, stage1: mlc.ConfigDict, workdir: Any
                  ) -> mlc.ConfigDict:
  """Stage 2 of a seeded TNT stage-1 run: its parameters, `job.stage2_local_chunks`,
  `job.stage2_steps` at peak lr x `job.stage2_lr_scale`."""
  job = base.job
  c2 = copy.deepcopy(stage1)
  c2.train.init_from, c2.workdir = stage1.workdir, str(workdir)
  c2.train.steps = job.stage2_steps
  c2.model.memory.tnt.local_chunk_sizes = tuple(ints(job.stage2_local_chunks))
  c2.opt.peak_lr = base.opt.peak_lr * job.stage2_lr_scale
  c2.opt.warmup_steps = min(base.opt.warmup_steps, max(1, job.stage2_steps // 5))
  return c2


def chunk_sweep(base: mlc.ConfigDict, out: Any) -> dict[str, Any]:
  arms = arm_configs(base, paths.path(base.workdir) / "time_to_target")
  seeds, sweep = ints(base.exp.seeds), ints(base.exp.sweep_chunks)
  stage2_root = paths.path(base.workdir) / "chunk_sweep"
  rows = {}
  for a, cfg in arms.items():
    stage1 = [run(seeded(cfg, s)) for s in seeds]
    rows[a] = {"trained_at": stage1[0]["chunk"], "runs": stage1}
    if not a.startswith("tnt"):
      continue
    s2 = [run(stage2_config(base, seeded(cfg, s), stage2_root / f"{a}_stage2" / f"seed{s}"))
          for s in seeds]
    rows[f"{a} + stage 2"] = {"trained_at": s2[0]["chunk"], "runs": s2}
  table = {a: {c: spread([r["sweep_bpb"].get(c) for r in v["runs"]]) for c in sweep}
           for a, v in rows.items()}
  lines = ["Validation bits/byte of each model evaluated at every inference chunk size "
           f"(Titans: C; TNT: C_L), mean [min, max] over seeds {seeds}.", "",
           "| model | trained at | " + " | ".join(f"eval {c}" for c in sweep) + " |",
           "|---" * (len(sweep) + 2) + "|"]
  for a, v in rows.items():
    lines.append(f"| {a} | {v['trained_at']} | "
                 + " | ".join(fmt(table[a][c], ".4f") for c in sweep) + " |")
  return {"seeds": seeds, "sweep_chunks": sweep, "table": "\n".join(lines),
          "bpb": {a: {str(c): s for c, s in t.items()} for a, t in table.items()}}


LR_SCALE_FROM = 64  # Titans arms above this chunk get lr_max x 64 / C (C = 256 diverges at
                    # step 1 with the main job's 0.02; docs/numerics.md: bound ~ 1 / C)
QUALITY_ARMS = {
    "titans_C<c>": "Titans at chunk c (lr_max x 64 / c above 64)",
    "ttt_mlp": "TTT-MLP (mini-batch 16)",
    "attention": "full causal attention",
    "swa": "sliding-window attention, window S_L",
    "tnt_CL<c>": "TNT stage 1, one local memory at C_L = c",
    "tnt_L2": "TNT, locals {C/2, C} (C = job.tnt_local_chunks)",
    "tnt_L4": "TNT, locals {C/4, C/2, C, 2C}",
    "tnt_no_global": "TNT without the global memory",
    "tnt_no_qk": "TNT without the Q-K projection",
    "tnt_no_reset": "TNT without resets (S_L = L)",
    "tnt_CL<c>_stage2": "TNT {c} + stage 2 (chunk_sweep's run)",
}


def quality_config(base: mlc.ConfigDict, name: str, seed: int) -> mlc.ConfigDict:
  """The seeded config of quality arm `name` (QUALITY_ARMS); arms that time_to_target or
  chunk_sweep define keep their run directories, so their runs are reused."""
  root = paths.path(base.workdir)
  if name.endswith("_stage2"):
    stage1 = name[:-len("_stage2")]
    if not stage1.startswith("tnt_CL"):
      raise ValueError(f"exp.quality_arms: {name!r} must be tnt_CL<c>_stage2")
    return stage2_config(base, quality_config(base, stage1, seed),
                         root / "chunk_sweep" / f"{stage1}_stage2" / f"seed{seed}")
  where = copy.deepcopy(base)
  where.workdir = str(root / "time_to_target")   # the runs time_to_target makes (or would)
  main_chunk = ints(base.job.tnt_local_chunks)[0]
  if name.startswith("tnt_CL"):
    return seeded(tnt_arm(where, name, (int(name[len("tnt_CL"):]),)), seed)
  target = tnt_lm.count(tnt_arm(where, "tnt", (main_chunk,)))
  if name.startswith("titans_C"):
    chunk = int(name[len("titans_C"):])
    shared = chunk in ints(base.exp.titans_chunks)
    if not shared:
      where.workdir = str(root / "quality")
    cfg = baseline_arm(where, name, "titans", target, model__memory__titans__chunk_size=chunk)
    if chunk > LR_SCALE_FROM:  # a chunk step sums C gradients: the stable step goes as 1/C
      cfg.model.memory.titans.lr_max = base.model.memory.titans.lr_max * LR_SCALE_FROM / chunk
    return seeded(cfg if shared else _quality_only(cfg), seed)
  where.workdir = str(root / "quality")
  shard, seq = base.job.tnt_shard_length, base.data.seq_len
  if name in ("ttt_mlp", "attention"):
    cfg = baseline_arm(where, name, name, target)
  elif name == "swa":
    cfg = baseline_arm(where, name, "swa", target, model__window=shard)
  elif name in ("tnt_L2", "tnt_L4"):
    n = int(name[-1])
    chunks = (main_chunk // 2, main_chunk) if n == 2 else four_locals(main_chunk)
    cfg = tnt_lm.match_params(tnt_arm(where, name, chunks), target)
  elif name == "tnt_no_global":
    cfg = tnt_lm.match_params(tnt_arm(where, name, (main_chunk,), use_global=False), target)
  elif name == "tnt_no_qk":
    cfg = tnt_arm(where, name, (main_chunk,), qk_projection=False)
  elif name == "tnt_no_reset":
    cfg = tnt_arm(where, name, (main_chunk,), shard_length=seq)
  else:
    raise ValueError(f"exp.quality_arms: unknown arm {name!r}; expected one of "
                     f"{list(QUALITY_ARMS)}")
  return seeded(_quality_only(cfg), seed)


def _quality_only(cfg: mlc.ConfigDict) -> mlc.ConfigDict:
  cfg.train.chunk_sweep = ""  # no evaluation at other chunk sizes
  return cfg


def quality(base: mlc.ConfigDict, out: Any) -> dict[str, Any]:
  names = config_lib.split_list(base.exp.quality_arms)
  seeds = ints(base.exp.quality_seeds)
  configs = {n: [quality_config(base, n, s) for s in seeds] for n in names}  # all valid first
  rows = {}
  for n, cfgs in configs.items():
    rs = [run(c, diverged_ok=True) for c in cfgs]
    rows[n] = {"chunk": rs[0]["chunk"], "params": rs[0]["params"],
               "bpb": spread([r["bpb"] for r in rs]), "per_seed_bpb": [r["bpb"] for r in rs],
               "diverged_at_step": [r.get("diverged_at_step") for r in rs]}
  ref = rows[names[0]]["bpb"]["mean"]
  lines = [f"Validation bits/byte at equal tokens ({base.job.stage1_steps} steps of "
           f"{base.data.global_batch * base.data.seq_len:,} bytes; stage 2 adds "
           f"{base.job.stage2_steps} steps), mean [min, max] over seeds {seeds}; "
           f"difference to {names[0]}.", "",
           f"| arm | memories / chunks | params | val bits/byte | vs {names[0]} |",
           "|---" * 5 + "|"]
  for n, r in rows.items():
    gap = "-" if r["bpb"]["mean"] is None or ref is None else f"{r['bpb']['mean'] - ref:+.4f}"
    lines.append(f"| {n} | {r['chunk']} | {r['params']:,} | {fmt(r['bpb'], '.4f')} | {gap} |")
  return {"seeds": seeds, "rows": rows, "table": "\n".join(lines)}


def main(argv: list[str]) -> dict[str, Any]:
  base, _ = config_lib.parse_args(argv, default="tnt_experiments")
  validation.one_of("experiment", base.experiment, EXPERIMENTS)
  out = paths.path(base.workdir) / base.experiment
  out.mkdir(parents=True, exist_ok=True)
  tnt_lm.use_compile_cache(base)
  t0 = time.perf_counter()
  experiment = {"time_to_target": time_to_target, "chunk_sweep": chunk_sweep,
                "quality": quality}[base.experiment]
  res = experiment(base, out)
  res["wall_s"] = time.perf_counter() - t0
  text = (f"### {base.experiment}: wall {res['wall_s']:.0f} s (reused runs not counted)\n\n"
          + res["table"] + "\n")
  print("\n" + text, flush=True)
  paths.write_text(out / "results.json", json.dumps(res, indent=1, default=str))
  paths.write_text(out / "results.md", text)
  figure = out / "curves.png"
  if base.docs and figure.exists():
    dest = tnt_lm.DOCS / f"tnt_{base.experiment}.png"
    dest.write_bytes(figure.read_bytes())
    print(f"copied {figure} to {dest}")
  return res


if __name__ == "__main__":
  main(sys.argv[1:])
