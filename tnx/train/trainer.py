"""The training loop, top to bottom: config -> mesh -> data -> model/optimizer -> checkpoint ->
loop (log, eval, checkpoint, NaN guard) -> final eval, chunk sweep, plot, summary.

`train(cfg)` returns a summary dict and writes, under cfg.workdir (process 0 for files other
than checkpoints): checkpoints/, metrics.jsonl, tb/, loss.png, summary.json.
"""

from __future__ import annotations

import json
import os
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
from tnx.train import evaluate as eval_lib
from tnx.train import metrics as metrics_lib
from tnx.train import optim, steps


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
  workdir = os.path.abspath(cfg.workdir)
  mesh = shd.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.context)
  batch_sh = shd.data_sharding(mesh)
  local_batch = cfg.data.global_batch // jax.process_count()
  fp32 = lm.fp32_softmax_and_loss

  # ------------------------------------------------------------------ input pipeline
  train_src = data_lib.make_source(cfg.data, cfg.data.seq_len, lm.vocab_size, "train")
  train_iter = iter(data_lib.batches(train_src, local_batch, seed=cfg.data.seed))
  eval_src = data_lib.make_source(cfg.data, cfg.data.seq_len, lm.vocab_size, "validation")
  eval_data = data_lib.eval_batches(eval_src, local_batch, cfg.train.eval_batches) \
      if cfg.train.eval_batches else []

  # ------------------------------------------------------------------ model, optimizer
  tx = plain_tx = optim.make_optimizer(cfg.opt, total)
  if cfg.train.init_from and "tnt" in lm.memory and lm.memory["tnt"].get(
      "stage2_freeze_nonlocal") and any(m == "tnt" for m in lm.mixers):
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
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                               max_to_keep=cfg.train.keep_ckpts)
  target = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        abstract_state, state_sh)
  if cfg.train.resume:
    state, meta = ckpt.restore(None, target, train_iter)
    if meta.get("model") != json.loads(cfg.model.to_json_best_effort()):
      raise ValueError(f"--resume: the model config differs from the one saved in {workdir}")
    start = int(meta["step"])
    _log(f"resumed from step {start} in {ckpt.directory}")
  else:
    if ckpt.all_steps():
      raise ValueError(f"workdir {workdir} already holds checkpoints {ckpt.all_steps()}; pass "
                       "--resume to continue it or set --config.workdir to a new directory")
    state = jax.jit(init, out_shardings=state_sh)()
    if cfg.train.init_from:
      src = ckpt_lib.Checkpointer(os.path.join(cfg.train.init_from, "checkpoints"))
      src_abstract = jax.eval_shape(steps.init_state_fn(lm, plain_tx, cfg.seed))
      loaded, _ = src.restore(None, jax.tree.map(
          lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), src_abstract,
          shd.tree_shardings(src_abstract, mesh)))
      src.close()
      state["params"] = loaded["params"]
      _log(f"initialized params from {cfg.train.init_from}")
    start = 0

  # ------------------------------------------------------------------ update step
  train_step = jax.jit(
      steps.make_train_step(graphdef, tx, schedule, accum_steps=cfg.train.accum_steps,
                            fp32=fp32),
      in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, None), donate_argnums=0)
  eval_step = jax.jit(steps.make_eval_step(graphdef, fp32=fp32))
  config_json = json.loads(cfg.to_json_best_effort())

  def save(step: int) -> None:
    ckpt.save(step, state, train_iter, {"step": step, "model": config_json["model"],
                                        "config": config_json})

  # ------------------------------------------------------------------ training loop
  writer = metrics_lib.MetricsWriter(workdir, total_steps=total, start_step=start,
                                     progress=cfg.train.progress)
  tokens_per_step = cfg.data.global_batch * cfg.data.seq_len
  history: list[dict[str, Any]] = []
  pending = None
  t_start = time.perf_counter()
  t_steady, steady_steps, compile_s = None, 0, 0.0
  last_saved = start if cfg.train.resume else -1

  def handle(step: int, m: dict[str, Any]) -> None:
    nonlocal t_steady, steady_steps, compile_s
    m = {k: float(v) for k, v in jax.device_get(m).items()}
    now = time.perf_counter()
    if t_steady is None:
      t_steady, compile_s = now, now - t_start
    else:
      steady_steps += 1
    tps = steady_steps * tokens_per_step / max(now - t_steady, 1e-9) if steady_steps else 0.0
    if not m["finite"]:
      save(step)
      ckpt.wait()
      writer.close()
      raise FloatingPointError(
          f"non-finite loss ({m['loss']}) or gradient norm ({m['grad_norm']}) at step {step}; "
          f"the update was skipped and the last good state is saved as checkpoint step {step} "
          f"in {ckpt.directory}")
    row = {"kind": "train", **m, "tokens_per_s": tps}
    history.append({"step": step, **row})
    if _itstime(step, cfg.train.log_every, total):
      writer.write(step, row)
    writer.progress(1, loss=m["loss"], tok_s=round(tps))

  with jax.set_mesh(mesh):
    for step in range(start, total):
      batch = shd.to_global(next(train_iter), batch_sh)
      state, m = train_step(state, batch)
      if pending is not None:
        handle(*pending)
      pending = (step + 1, m)
      done = step + 1
      if eval_data and cfg.train.eval_every and done % cfg.train.eval_every == 0 \
          and done != total:
        handle(*pending)
        pending = None
        ev = eval_lib.evaluate(eval_step, state["params"], state["rest"], eval_data, batch_sh)
        writer.write(done, {"kind": "eval", **ev})
      if _itstime(done, cfg.train.ckpt_every, total):
        if pending is not None:
          handle(*pending)
          pending = None
        save(done)
        last_saved = done
    if pending is not None:
      handle(*pending)
    train_s = time.perf_counter() - t_start
    if last_saved != total:
      save(total)

    # ---------------------------------------------------------------- final evaluation
    summary: dict[str, Any] = {"params": counts, "steps": total, "start_step": start,
                               "train_wall_s": train_s, "compile_s": compile_s,
                               "tokens_per_s": history[-1]["tokens_per_s"] if history else 0.0}
    if eval_data:
      summary["eval"] = eval_lib.evaluate(eval_step, state["params"], state["rest"],
                                          eval_data, batch_sh)
      writer.write(total, {"kind": "eval", **summary["eval"]})
      _log(f"step {total}: validation loss {summary['eval']['loss']:.4f}, "
           f"{summary['eval']['bits_per_byte']:.4f} bits/byte")
    sweep = [int(c) for c in config_lib.split_list(cfg.train.chunk_sweep)]
    if sweep and eval_data:
      summary["chunk_sweep"] = eval_lib.chunk_sweep(graphdef, state["params"], state["rest"],
                                                    sweep, eval_data, batch_sh, fp32=fp32)
  ckpt.close()
  writer.close()
  summary["train_losses"] = [(h["step"], h["loss"]) for h in history]
  if jax.process_index() == 0:
    if cfg.train.plot and history:
      metrics_lib.plot_curves({"train": ([h["step"] for h in history],
                                         [h["loss"] for h in history])},
                              os.path.join(workdir, "loss.png"), ylabel="loss (nats/byte)",
                              title=",".join(lm.mixers))
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=1, default=str)
  summary["state"] = state
  summary["graphdef"] = graphdef
  return summary


def final_losses(workdir: str) -> dict[int, float]:
  """{step: train loss} from a run's metrics.jsonl (later rows win after a resume)."""
  rows = metrics_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  return {r["step"]: r["loss"] for r in rows if r.get("kind", "train") == "train"}


