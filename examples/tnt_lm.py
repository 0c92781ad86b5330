"""Main job: train a Titans LM (chunk 8) and a TNT LM of equal parameter count on the Python
standard library's source (byte level), TNT in two stages, and compare validation loss
against training time and tokens, time to a common target loss, bits per byte and serial
depth.

  python -m examples.tnt_lm            # the full job (~9.5 min on a loaded 2-core CPU)
  python -m examples.tnt_lm --smoke    # tiny models, a few steps: ~1.5 min CPU (compilation)
  python -m examples.tnt_lm --config.job.stage1_steps=1000 --config.workdir=runs/long
  python -m examples.tnt_lm --resume   # after an interruption: finish the runs not yet done
  python -m examples.tnt_lm --docs     # also copy curves.png to docs/tnt_lm_curves.png

Writes under config.workdir (a local path or a URL): one run directory per model
(checkpoints, metrics.jsonl, tb/, loss.png), results.json, results.md and curves.png.
Config: tnx/configs/tnt_lm.py.

Time axis: cumulative training-step seconds, from the per-interval step times the trainer
logs (compilation, evaluation and checkpointing excluded; each is reported apart). Runs go
one after another, so on a shared machine their step times see different loads; the job
therefore also times every model's step interleaved (round-robin, `job.timing_rounds`) after
training, and the time to the target loss is given both ways.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections as mlc
import numpy as np
from flax import nnx

from benchmarks import common
from tnx import sharding
from tnx.models import LM, available_families, param_counts
from tnx.train import config as config_lib
from tnx.train import metrics as metrics_lib
from tnx.train import optim, paths, steps, trainer

DOCS = Path(__file__).resolve().parents[1] / "docs"
FULL_EXPERIMENTS = ("python -m examples.tnt_experiments --experiment=time_to_target|"
                    "chunk_sweep|quality (Titans C and TNT C_L over 3 seeds, every model at "
                    "every chunk, ablations; docs/tnt.md), python -m benchmarks.tnt (step time "
                    "against sequence length) and docs/tnt_lm.md (this job, the regimes tried)")


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


def chunk_label(cfg: mlc.ConfigDict) -> tuple[str, int | None]:
  """(chunk description, serial depth): the sequential chunk steps one layer takes over one
  sequence. Titans: L/C. TNT: L/C_G global steps, then S_L/C_L local steps (all shards of
  the sequence folded into the batch run side by side; several locals also run side by
  side, the longest chain counts)."""
  mem, seq = cfg.model.memory, cfg.data.seq_len
  kind = cfg.model.mixers.split("_")[0]
  ceil = lambda a, b: -(-a // b)
  if kind == "tnt":
    t = mem.tnt
    shard = min(t.shard_length, seq)
    glob = t.get("use_global", True)
    label = ("C_L=" + ",".join(map(str, t.local_chunk_sizes)) +
             (f" C_G={t.global_chunk_size}" if glob else " no global") + f" S_L={t.shard_length}")
    return label, (ceil(seq, t.global_chunk_size) if glob else 0) + max(
        ceil(shard, c) for c in t.local_chunk_sizes)
  if kind == "titans":
    return f"C={mem.titans.chunk_size}", ceil(seq, mem.titans.chunk_size)
  return "-", None


def val_curve(cfg: mlc.ConfigDict) -> list[dict[str, float]]:
  """[{step, seconds, tokens, loss, bits_per_byte}] at each evaluation of the run: `seconds`
  sums the logged per-interval training-step times up to that step (no compilation, no
  evaluation or checkpoint time)."""
  rows = metrics_lib.read_jsonl(paths.path(cfg.workdir) / "metrics.jsonl")
  tokens_per_step = cfg.data.global_batch * cfg.data.seq_len
  seconds_at, prev, total = {0: 0.0}, 0, 0.0
  for r in rows:
    if r.get("kind") == "train" and "step_time_s" in r:
      total += (r["step"] - prev) * r["step_time_s"]
      prev = r["step"]
      seconds_at[r["step"]] = total
  out = []
  for r in rows:
    if r.get("kind") == "eval" and r["step"] in seconds_at:
      out.append({"step": r["step"], "seconds": seconds_at[r["step"]],
                  "tokens": r["step"] * tokens_per_step, "loss": r["loss"],
                  "bits_per_byte": r["bits_per_byte"]})
  return out


def first_reach(curve: list[dict[str, float]], target: float, key: str) -> float | None:
  """The `key` value (seconds or tokens) where the validation loss first falls to `target`,
  linearly interpolated between the two evaluations around the crossing; None if never."""
  prev = None
  for p in curve:
    if p["loss"] <= target:
      if prev is None or prev["loss"] == p["loss"]:
        return p[key]
      frac = (prev["loss"] - target) / (prev["loss"] - p["loss"])
      return prev[key] + frac * (p[key] - prev[key])
    prev = p
  return None


def interleaved_step_times(runs: dict[str, mlc.ConfigDict], rounds: int, per_round: int
                           ) -> dict[str, float]:
  """Median seconds per training step of each run's model, measured round-robin (each
  round times `per_round` steps of every model in turn) so that all models see the same
  load. Fresh parameters and a fixed random batch: step time does not depend on them. The
  step is jitted exactly as tnx.train.trainer jits it (same optimizer, schedule, shardings),
  so with the persistent compilation cache on it is not compiled a second time."""
  fns = {}
  for name, cfg in runs.items():
    lm = config_lib.validate(cfg)
    total = int(cfg.train.steps)
    mesh = sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.context)
    batch_sh = sharding.data_sharding(mesh)
    tx = optim.make_optimizer(cfg.opt, total)
    graphdef, _, _ = steps.abstract_model(lm, cfg.seed)
    init = steps.init_state_fn(lm, tx, cfg.seed)
    state_sh = sharding.tree_shardings(jax.eval_shape(init), mesh)
    step = jax.jit(steps.make_train_step(graphdef, tx, optim.schedule(cfg.opt, total),
                                         accum_steps=cfg.train.accum_steps,
                                         fp32=lm.fp32_softmax_and_loss),
                   in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, None),
                   donate_argnums=0)
    b, seq = cfg.data.global_batch, cfg.data.seq_len
    tok = np.random.default_rng(0).integers(0, lm.vocab_size, (b, seq)).astype(np.int32)
    batch = sharding.to_global({"inputs": tok, "targets": tok,
                                "weights": np.ones((b, seq), np.float32)}, batch_sh)
    holder = [jax.jit(init, out_shardings=state_sh)()]

    def run(step=step, batch=batch, holder=holder, mesh=mesh):
      with jax.set_mesh(mesh):
        holder[0], m = step(holder[0], batch)
      return m
    common.block(run())  # compile (or load from the cache)
    fns[name] = run
  times: dict[str, list[float]] = {n: [] for n in fns}
  for _ in range(rounds):
    for name, fn in fns.items():
      times[name].append(common.time_fn(fn, steps=per_round, warmup=0))
  return {n: float(np.median(t)) for n, t in times.items()}


def table(rows: list[dict[str, Any]], target: float) -> str:
  head = ("| model | chunks | serial depth | params | tokens/s (run) | tokens/s (interleaved) "
          f"| train s | compile s | time to val loss {target:.3f} (run / interleaved) "
          "| tokens to target | val loss | val bits/byte |\n" + "|---" * 12 + "|")
  lines = [head]
  def fmt(r: dict[str, Any], key: str, spec: str) -> str:
    if key not in r:  # not measured (stage 1 of TNT: its time to target is stage 1 + 2's)
      return "-"
    return "not reached" if r[key] is None else format(r[key], spec)
  for r in rows:
    lines.append(
        f"| {r['name']} | {r['chunk']} | {r['serial_depth']} | {r['params']:,} | "
        f"{r['tokens_per_s']:,.0f} | {fmt(r, 'tokens_per_s_interleaved', ',.0f')} | "
        f"{r['train_s']:.1f} | {r['compile_s']:.1f} | "
        f"{fmt(r, 'time_to_target_s', '.1f')} / {fmt(r, 'time_to_target_interleaved_s', '.1f')}"
        f" | {fmt(r, 'tokens_to_target', ',.0f')} | {r['loss']:.4f} | {r['bpb']:.4f} |")
  return "\n".join(lines)


def plot(curves: dict[str, list[dict[str, float]]], target: float, path: Any) -> None:
  """One figure: validation loss against training seconds (left) and tokens (right)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
  interleaved = all("seconds_interleaved" in p for c in curves.values() for p in c)
  seconds = (("seconds_interleaved", "training seconds at the interleaved step times")
             if interleaved else ("seconds", "training-step seconds (this CPU)"))
  for ax, key, label in ((axes[0], *seconds), (axes[1], "tokens", "training tokens (bytes)")):
    for name, curve in curves.items():
      ax.plot([p[key] for p in curve], [p["loss"] for p in curve], marker=".", label=name)
    ax.axhline(target, color="gray", ls="--", lw=0.8, label=f"target {target:.3f}")
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("validation loss (nats/byte)")
  axes[1].legend()
  fig.suptitle("Titans vs TNT (stage 1 + 2) on the stdlib corpus: validation loss")
  fig.tight_layout()
  paths.save_figure(fig, path, dpi=110)
  plt.close(fig)


def reading(rows: dict[str, dict[str, Any]], base_name: str) -> str:
  """The two-sentence reading of the numbers, worded from the numbers."""
  b, t1 = rows[base_name], rows["tnt_stage1"]
  t2 = rows.get("tnt_stage2", t1)
  speed = t1.get("speedup_interleaved", t1["tokens_per_s"] / b["tokens_per_s"])
  depth = b["serial_depth"] / t1["serial_depth"]
  key = "time_to_target_interleaved_s" if "speedup_interleaved" in t1 else "time_to_target_s"
  tt_b, tt_t = b.get(key), t2.get(key)
  if tt_b and tt_t:
    race = (f"reaches the common target {tt_b / tt_t:.2f}x "
            f"{'sooner' if tt_t < tt_b else 'later'} than {base_name}")
  else:
    race = "does not reach the common target" if not tt_t else "reaches the target first"
  dq = t2["bpb"] - b["bpb"]
  first = (f"TNT cuts the serial depth {depth:.0f}x ({b['serial_depth']} -> "
           f"{t1['serial_depth']} chunk steps per layer) but trains at {speed:.2f}x "
           f"{base_name}'s tokens/s on this CPU, and after stage 2 it {race}, "
           f"{abs(dq):.3f} bits/byte {'worse' if dq > 0 else 'better'} at the end.")
  second = ("On 2 CPU cores a step costs its arithmetic, not its number of sequential "
            "chunk steps, so the shorter dependency chain buys little while TNT computes a "
            "global and a local memory plus the Q-K projection; the paper's 7-17x needs an "
            "accelerator whose small-chunk steps are latency-bound.")
  return first + " " + second


def use_compile_cache(base: mlc.ConfigDict) -> None:
  """With job.compile_cache and a local workdir: XLA's persistent cache in workdir/jax_cache,
  so repeated compilations of the same step (timing, seeds, resumed runs) load instead."""
  root = paths.path(base.workdir)
  if base.job.compile_cache and paths.is_local(root):
    jax.config.update("jax_compilation_cache_dir", str(root / "jax_cache"))


def main(argv: list[str]) -> dict[str, Any]:
  sharding.maybe_initialize_distributed()
  base, resume = config_lib.parse_args(argv, default="tnt_lm")
  runs = build_configs(base)
  out = paths.path(base.workdir)
  out.mkdir(parents=True, exist_ok=True)
  use_compile_cache(base)
  job_t0 = time.perf_counter()
  results, rows, curves = {}, [], {}
  offset = {"seconds": 0.0, "tokens": 0.0, "step": 0}
  for name, cfg in runs.items():
    print(f"\n=== {name}: {cfg.model.mixers}, {cfg.train.steps} steps -> {cfg.workdir}",
          flush=True)
    started = (paths.path(cfg.workdir) / "checkpoints").exists()
    if started and not resume:
      raise SystemExit(f"{cfg.workdir} exists already; pass --resume to finish the job, "
                       "remove it, or set --config.workdir")
    cfg.train.resume = started  # a finished run resumes at its last step: evaluation only
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    s = trainer.train(cfg)
    call_s = time.perf_counter() - t0
    chunk, depth = chunk_label(cfg)
    results[name] = {k: v for k, v in s.items() if k not in ("state", "graphdef")}
    curve = val_curve(cfg)
    if name == "tnt_stage2":  # continues stage 1's curve
      curve = [dict(p, **{k: p[k] + offset[k] for k in offset}) for p in curve]
      curve = curves.pop("tnt_stage1") + curve
      curves["tnt stage 1 + 2"] = curve
    else:
      curves[name] = curve
    if name == "tnt_stage1" and curve:
      offset = {k: curve[-1][k] for k in offset}
    train_s = s.get("train_step_s", 0.0) + s.get("step_time_s", 0.0)  # + the first step
    overhead = max(call_s - s.get("compile_s", 0.0) - s.get("train_step_s", 0.0), 0.0)
    results[name].update(chunk=chunk, serial_depth=depth, val_curve=curve,
                         call_s=call_s, overhead_s=overhead,
                         load_avg=[load_before, os.getloadavg()[0]])
    rows.append({"name": name, "chunk": chunk, "serial_depth": depth,
                 "params": s["params"]["total"], "tokens_per_s": s["tokens_per_s"],
                 "train_s": train_s, "compile_s": s.get("compile_s", 0.0),
                 "loss": s["eval"]["loss"], "bpb": s["eval"]["bits_per_byte"],
                 "overhead_s": overhead, "call_s": call_s,
                 "eval_s": s.get("eval_s", 0.0), "checkpoint_s": s.get("checkpoint_s", 0.0)})
  by = {r["name"]: r for r in rows}
  base_name = next(n for n in by if not n.startswith("tnt"))
  # interleaved step times: every model under the same load
  rounds = int(base.job.timing_rounds)
  if rounds:
    print(f"\n=== interleaved step timing: {rounds} rounds x {base.job.timing_steps} steps",
          flush=True)
    step_s = interleaved_step_times(runs, rounds, int(base.job.timing_steps))
    for name, sec in step_s.items():
      cfg = runs[name]
      by[name]["tokens_per_s_interleaved"] = cfg.data.global_batch * cfg.data.seq_len / sec
      by[name]["step_s_interleaved"] = sec
      by[name]["speedup_interleaved"] = step_s[base_name] / sec
    # each evaluation's time at the interleaved step times (TNT: stage 1's, then stage 2's)
    for cname, curve in curves.items():
      first, second = ("tnt_stage1", "tnt_stage2") if cname == "tnt stage 1 + 2" else (
          cname, cname)
      for p in curve:
        n1 = min(p["step"], runs[first].train.steps)
        p["seconds_interleaved"] = n1 * step_s[first] + (p["step"] - n1) * step_s[second]
  # the common target: the highest of the models' best validation losses, so all reach it
  model_curves = {base_name: curves[base_name],
                  "tnt": curves.get("tnt stage 1 + 2", curves.get("tnt_stage1", []))}
  target = float(base.job.target_loss) or max(min(p["loss"] for p in c)
                                              for c in model_curves.values() if c)
  for name, curve in model_curves.items():
    r = by[base_name] if name == base_name else by.get("tnt_stage2", by.get("tnt_stage1"))
    if r is None or not curve:
      continue
    r["time_to_target_s"] = first_reach(curve, target, "seconds")
    r["tokens_to_target"] = first_reach(curve, target, "tokens")
    if curve and "seconds_interleaved" in curve[0]:
      r["time_to_target_interleaved_s"] = first_reach(curve, target, "seconds_interleaved")
  job_s = time.perf_counter() - job_t0
  overhead = sum(r["overhead_s"] for r in rows)
  eval_ckpt = sum(r["eval_s"] + r["checkpoint_s"] for r in rows)
  summary = {"table": rows, "target_loss": target, "job_wall_s": job_s,
             "overhead_s": overhead, "overhead_fraction": overhead / job_s,
             "eval_checkpoint_s": eval_ckpt, "eval_checkpoint_fraction": eval_ckpt / job_s}
  if "tnt_stage1" in by:
    t1, t2 = by["tnt_stage1"], by.get("tnt_stage2", by["tnt_stage1"])
    b = by[base_name]
    summary["speedup_tokens_per_s"] = t1["tokens_per_s"] / b["tokens_per_s"]
    summary["speedup_interleaved"] = t1.get("speedup_interleaved")
    summary["tnt_total_train_s"] = t1["train_s"] + (t2["train_s"] if t2 is not t1 else 0.0)
    summary["baseline_train_s"] = b["train_s"]
    summary["reading"] = reading(by, base_name)
  results["summary"] = summary
  text = table(rows, target)
  text += (f"\n\nTarget: validation loss {target:.4f} nats/byte (the highest of the models' "
           "best validation losses). Time = training-step seconds (compilation, evaluation "
           "and checkpoints excluded); 'interleaved' uses step times measured round-robin "
           "after training. Serial depth = sequential chunk steps per layer per sequence.")
  if "speedup_tokens_per_s" in summary:
    sp = summary["speedup_interleaved"]
    text += (f"\nTNT stage-1 speed relative to {base_name} (tokens/s): "
             f"{summary['speedup_tokens_per_s']:.2f}x in the runs"
             + (f", {sp:.2f}x interleaved" if sp else ""))
  text += (f"\nJob wall time {job_s:.0f} s; evaluation, checkpoints, setup and final "
           f"evaluation took {overhead:.0f} s ({100 * overhead / job_s:.1f}% of it), of which "
           f"evaluation (its compilation included) and checkpoints {eval_ckpt:.0f} s "
           f"({100 * eval_ckpt / job_s:.1f}%); load average {os.getloadavg()[0]:.1f} at the "
           "end.")
  for name, r in results.items():
    if isinstance(r, dict) and r.get("chunk_sweep"):
      sweep = ", ".join(f"{c}: {m['bits_per_byte']:.4f}" for c, m in r["chunk_sweep"].items())
      text += f"\n{name} chunk-size sweep (eval chunk: bits/byte): {sweep}"
  if "reading" in summary:
    text += "\n\n" + summary["reading"]
  text += f"\n\nFull experiments: {FULL_EXPERIMENTS}."
  print("\n" + text, flush=True)
  paths.write_text(out / "results.json", json.dumps(results, indent=1, default=str))
  paths.write_text(out / "results.md", text + "\n")
  plot(curves, target, out / "curves.png")
  if base.docs:
    (DOCS / "tnt_lm_curves.png").write_bytes((out / "curves.png").read_bytes())
    print(f"copied curves.png to {DOCS / 'tnt_lm_curves.png'}")
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
