"""The training loop, top to bottom: config -> mesh -> data -> model/optimizer -> checkpoint /
resume -> loop (log, eval, checkpoint, NaN guard, stop signals) -> final eval, chunk sweep,
plot, summary.

`train(cfg)` returns a summary dict and writes, under cfg.workdir (a local path or a URL;
process 0 for files other than checkpoints): checkpoints/, metrics.jsonl, tb/, loss.png,
summary.json. It raises `resume.NonFiniteError` (a FloatingPointError) on a non-finite step,
`checkpoint.CheckpointError` for unusable checkpoints and `preemption.Interrupted` (exit
status 0) after SIGTERM/SIGINT, once the current step is saved.
"""

from __future__ import annotations

import json
import time
from typing import Any

import jax
import ml_collections as mlc
from flax import nnx

from tnx import sharding as shd
from tnx.models.lm import LM, format_param_counts, param_counts
from tnx.train import checkpoint as ckpt_lib
from tnx.train import config as config_lib
from tnx.train import data as data_lib
from tnx.train import domains as domains_lib
from tnx.train import evaluate as eval_lib
from tnx.train import metrics as metrics_lib
from tnx.train import optim, paths, preemption, steps
from tnx.train import resume as resume_lib


def _log(msg: str) -> None:
  if jax.process_index() == 0:
    print(msg, flush=True)


def _itstime(step: int, every: int, total: int) -> bool:
  return step == total or (every > 0 and step % every == 0)


def train(cfg: mlc.ConfigDict) -> dict[str, Any]:
  """Trains (or resumes) the run described by `cfg`; see tnx/configs/lm.py for the fields."""
  # ------------------------------------------------------------------ config, mesh
  lm = config_lib.validate(cfg)
  total = int(cfg.train.steps)
  workdir = paths.path(cfg.workdir)
  mesh = shd.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.context)
  batch_sh = shd.data_sharding(mesh)
  local_batch = cfg.data.global_batch // jax.process_count()
  fp32 = lm.fp32_softmax_and_loss
  config_json = json.loads(cfg.to_json_best_effort())

  # ------------------------------------------------------------------ input pipeline
  # cfg.domains.names set: K domains in a weighted grain mixture (tnx.train.domains)
  mixer = domains_lib.Domains(cfg, cfg.data.seq_len, local_batch) \
      if domains_lib.enabled(cfg) else None
  if mixer is not None:
    train_iter = mixer.iterator
    eval_data = mixer.eval_data if cfg.train.eval_batches else []
  else:
    train_src = data_lib.make_source(cfg.data, cfg.data.seq_len, lm.vocab_size, "train")
    train_iter = iter(data_lib.batches(train_src, local_batch, seed=cfg.data.seed))
    eval_src = data_lib.make_source(cfg.data, cfg.data.seq_len, lm.vocab_size, "validation")
    eval_data = data_lib.eval_batches(eval_src, local_batch, cfg.train.eval_batches) \
        if cfg.train.eval_batches else []

  # ------------------------------------------------------------------ model, optimizer
  tx = plain_tx = optim.make_optimizer(cfg.opt, total)
  if cfg.train.init_from and lm.memory["tnt"].stage2_freeze_nonlocal and any(
      m == "tnt" for m in lm.mixers):
    from tnx.tnt.stage2 import freeze_nonlocal  # stage 2 trains only the local memories
    _, abstract_params, _ = steps.abstract_model(lm, cfg.seed)
    tx = freeze_nonlocal(plain_tx, nnx.to_pure_dict(abstract_params))
  schedule = optim.schedule(cfg.opt, total)
  graphdef, _, _ = steps.abstract_model(lm, cfg.seed)
  init = steps.init_state_fn(lm, tx, cfg.seed)
  abstract_state = jax.eval_shape(init)
  state_sh = shd.tree_shardings(abstract_state, mesh)
  counts = param_counts(nnx.eval_shape(lambda: LM(lm, rngs=nnx.Rngs(cfg.seed))))
  _log(f"model {','.join(lm.mixers)}: {counts['total']:,} parameters\n"
       f"{format_param_counts(counts)}")

  # ------------------------------------------------------------------ checkpoint / resume
  ckpt = ckpt_lib.Checkpointer(workdir / "checkpoints",
                               retention=ckpt_lib.Retention.from_config(cfg.train))
  target = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        abstract_state, state_sh)
  changes: dict[str, Any] = {}
  if cfg.train.resume:
    step0 = ckpt.resume_step(cfg.train.resume_step)
    changes = resume_lib.check_config(ckpt.read_meta(step0).get("config", {}), config_json,
                                      allow=cfg.train.allow_changes,
                                      where=f"{ckpt.directory} (step {step0})")
    state, meta = _restore(ckpt, step0, target, train_iter, changes)
    if mixer is not None:  # loss weights and running estimates (p is in the iterator)
      mixer.load_state_dict(meta["mixing"])
    start = int(meta["step"])
    dropped = ckpt.delete_after(start)
    _log(f"resumed from step {start} in {ckpt.directory}" +
         (f" (discarded the later checkpoints {dropped} of the abandoned run)" if dropped
          else "") + (f"; config changes:\n{resume_lib.format_changes(changes)}" if changes
                      else ""))
  else:
    if ckpt.all_steps():
      raise ValueError(f"workdir {workdir} already holds checkpoints {ckpt.describe()}; pass "
                       "--resume to continue it or set --config.workdir to a new directory")
    state = jax.jit(init, out_shardings=state_sh)()
    if cfg.train.init_from:
      state["params"] = _params_from(cfg.train.init_from, lm, plain_tx, cfg.seed, mesh)
      _log(f"initialized params from {cfg.train.init_from}")
    start = 0

  # ------------------------------------------------------------------ update step
  train_step = jax.jit(
      steps.make_train_step(graphdef, tx, schedule, accum_steps=cfg.train.accum_steps,
                            fp32=fp32),
      in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, None), donate_argnums=0)
  eval_step = jax.jit(steps.make_eval_step(graphdef, fp32=fp32))

  spent = {"eval_s": 0.0, "checkpoint_s": 0.0}  # wall seconds in evaluation (its compilation
                                                # included) and in checkpoint calls

  def evaluate() -> dict[str, float]:
    t0 = time.perf_counter()
    ev = eval_lib.evaluate(eval_step, state["params"], state["rest"], eval_data, batch_sh)
    if mixer is not None:  # per-domain validation loss and bits/byte
      ev |= mixer.evaluate(graphdef, state["params"], state["rest"])
    spent["eval_s"] += time.perf_counter() - t0
    return ev

  # ------------------------------------------------------------------ training loop
  writer = metrics_lib.MetricsWriter(workdir, total_steps=total, start_step=start,
                                     progress=cfg.train.progress)
  if cfg.train.resume:
    writer.write(start, {"kind": "resume", "changes": {k: list(v) for k, v in changes.items()}})
  clock = metrics_lib.StepClock(cfg.data.global_batch * cfg.data.seq_len)
  # A saved step is confirmed good by the finite step after it (None: nothing to confirm).
  awaiting = None if ckpt.is_confirmed(start) or not cfg.train.resume else start
  pending = None
  last_saved = start if cfg.train.resume else -1

  def save(step: int, ev: dict[str, float] | None = None) -> None:
    nonlocal awaiting, last_saved
    if cfg.train.keep_best and ev is None and eval_data:
      ev = evaluate()
      writer.write(step, {"kind": "eval", **ev})
    t0 = time.perf_counter()
    ckpt.save(step, state, train_iter, {"step": step, "config": config_json, **(
        {"mixing": mixer.state_dict()} if mixer is not None else {})},
              metrics={f"eval/{k}": v for k, v in ev.items()} if ev else None)
    spent["checkpoint_s"] += time.perf_counter() - t0
    awaiting, last_saved = step, step

  def handle(step: int, m: dict[str, Any]) -> None:
    """Host side of `step` once its metrics arrive: NaN guard, confirmation, logging."""
    nonlocal awaiting
    m = {k: float(v) for k, v in jax.device_get(m).items()}
    clock.tick(step)
    if not m["finite"]:
      if awaiting == step - 1:
        ckpt.mark_bad(awaiting, f"step {step}, computed from it, was not finite")
      raise resume_lib.nonfinite_error(
          step=step, loss=m["loss"], grad_norm=m["grad_norm"], directory=ckpt.directory,
          last_good=ckpt.newest_good(), peak_lr=cfg.opt.peak_lr,
          lr_scale=cfg.train.nan_lr_scale, workdir=cfg.workdir)
    if awaiting == step - 1:
      ckpt.mark_good(awaiting)
      awaiting = None
    if _itstime(step, cfg.train.log_every, total):
      with clock.paused():
        writer.write(step, {"kind": "train", **m, **clock.report()})
    writer.progress(1, loss=m["loss"])

  def flush() -> None:
    nonlocal pending
    if pending is not None:
      handle(*pending)
      pending = None

  try:
    with preemption.StopSignals() as stop, jax.set_mesh(mesh):
      for step in range(start, total):
        batch = next(train_iter)
        batch = shd.to_global(mixer.prepare(batch) if mixer is not None else batch, batch_sh)
        state, m = train_step(state, batch)
        if pending is not None:
          handle(*pending)
        pending = (step + 1, m)
        done = step + 1
        if mixer is not None and mixer.due(done):  # ERMA / VA round
          flush()
          with clock.paused():
            writer.write(done, {"kind": "mixing",
                                **mixer.update(graphdef, state["params"], state["rest"])})
        ev = None
        if eval_data and cfg.train.eval_every and done % cfg.train.eval_every == 0 \
            and done != total:
          flush()
          with clock.paused():
            ev = evaluate()
            writer.write(done, {"kind": "eval", **ev})
        if _itstime(done, cfg.train.ckpt_every, total):
          flush()
          with clock.paused():
            save(done, ev)
        if stop.requested(done):
          flush()
          with clock.paused():
            if last_saved != done:
              save(done)
            ckpt.wait()
          _stop(f"{stop.signal_name}: stopped after step {done}; checkpoint step {done} is "
                f"saved in {ckpt.directory}. Resume with:\n  {resume_lib.resume_command()}",
                done)
      flush()
      if last_saved != total:
        save(total)
      summary = {"params": counts, "steps": total, "start_step": start,
                 **clock.summary()}
      summary["train_wall_s"] = summary["wall_s"]
      if start == total:  # a finished run resumed for its evaluation: keep its training rates
        summary.update(_previous_rates(workdir))
      if stop.signal_name:  # arrived after the last step: the final checkpoint is saved
        ckpt.wait()
        _stop(f"{stop.signal_name}: training finished and checkpoint step {total} is saved "
              f"in {ckpt.directory}; the final evaluation was skipped. Run it with:\n  "
              f"{resume_lib.resume_command()}", total)

      # -------------------------------------------------------------- final evaluation
      if eval_data:
        summary["eval"] = evaluate()
        writer.write(total, {"kind": "eval", **summary["eval"]})
        _log(f"step {total}: validation loss {summary['eval']['loss']:.4f}, "
             f"{summary['eval']['bits_per_byte']:.4f} bits/byte")
      sweep = [int(c) for c in config_lib.split_list(cfg.train.chunk_sweep)]
      if sweep and eval_data:
        summary["chunk_sweep"] = eval_lib.chunk_sweep(graphdef, state["params"],
                                                      state["rest"], sweep, eval_data,
                                                      batch_sh, fp32=fp32)
  finally:  # also on errors and signals: finish the save in progress, flush the metrics
    t0 = time.perf_counter()
    ckpt.close()
    spent["checkpoint_s"] += time.perf_counter() - t0
    writer.close()
  summary.update(spent)
  _write_outputs(cfg, workdir, writer, summary, lm.mixers)
  summary["state"] = state
  summary["graphdef"] = graphdef
  return summary


def _stop(message: str, step: int) -> None:
  """Prints `message` and raises Interrupted (exit status 0)."""
  _log(message)
  raise preemption.Interrupted(message, step)


RATE_KEYS = ("compile_s", "train_step_s", "steady_steps", "step_time_s", "tokens_per_s",
             "wall_tokens_per_s", "train_wall_s", "peak_memory_gb")


def _previous_rates(workdir: Any) -> dict[str, Any]:
  """The rate fields of the summary.json an earlier invocation of this run wrote."""
  f = workdir / "summary.json"
  if not f.exists():
    return {}
  old = json.loads(f.read_text())
  return {k: old[k] for k in RATE_KEYS if k in old}


def _restore(ckpt: ckpt_lib.Checkpointer, step: int, target: Any, data_iter: Any,
             changes: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
  """ckpt.restore, naming changed model keys when the saved arrays do not fit them."""
  try:
    return ckpt.restore(step, target, data_iter)
  except ckpt_lib.CheckpointError as e:
    model_keys = [k for k in changes if k.startswith("model.")]
    if model_keys:
      raise ckpt_lib.CheckpointError(f"{e} The changed model keys {model_keys} probably do "
                                     "not fit the saved arrays.") from None
    raise


def _params_from(init_from: str, lm: Any, tx: Any, seed: int, mesh: Any) -> Any:
  """The parameters of the newest usable checkpoint of the run in `init_from`."""
  src = ckpt_lib.Checkpointer(paths.path(init_from) / "checkpoints", create=False)
  abstract = jax.eval_shape(steps.init_state_fn(lm, tx, seed))
  target = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                        abstract, shd.tree_shardings(abstract, mesh))
  try:
    loaded, _ = src.restore(None, target)
  except ckpt_lib.CheckpointError as e:
    raise ckpt_lib.CheckpointError(f"train.init_from={init_from!r}: {e}") from None
  finally:
    src.close()
  return loaded["params"]


def _write_outputs(cfg: mlc.ConfigDict, workdir: Any, writer: metrics_lib.MetricsWriter,
                   summary: dict[str, Any], mixers: tuple[str, ...]) -> None:
  """loss.png and summary.json from the whole metrics file (all runs of a resumed job)."""
  rows = metrics_lib.read_jsonl(writer.path) if writer.active and writer.path.exists() else []
  summary["train_losses"] = [(r["step"], r["loss"]) for r in rows
                             if r.get("kind") == "train" and "loss" in r]
  if jax.process_index() != 0:
    return
  curves = metrics_lib.curves_from_rows(rows)
  if cfg.train.plot and curves:
    metrics_lib.plot_curves(curves, workdir / "loss.png", ylabel="loss (nats/byte)",
                            title=",".join(mixers))
  paths.write_text(workdir / "summary.json", json.dumps(summary, indent=1, default=str))


def final_losses(workdir: paths.PathLike) -> dict[int, float]:
  """{step: train loss} from a run's metrics.jsonl (the resumed run's rows win)."""
  rows = metrics_lib.read_jsonl(paths.path(workdir) / "metrics.jsonl")
  return {r["step"]: r["loss"] for r in rows if r.get("kind", "train") == "train"}
