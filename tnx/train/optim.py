"""Optimizer: AdamW with linear warmup + cosine decay, global-norm clipping, a weight-decay mask.

Gradient accumulation is done in the train step (a scan over microbatches), not with
optax.MultiSteps, so no extra parameter-sized buffer lives across steps.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from tnx import validation


def decay_mask(params: Any, *, exclude: tuple[str, ...] = ()) -> Any:
  """True for leaves that get weight decay: matrices (ndim >= 2) whose path names none of
  `exclude` (e.g. ('embedding',)); norms, biases and vectors are never decayed."""
  def keep(path, x):
    names = [str(getattr(p, "key", getattr(p, "name", p))) for p in path]
    return x.ndim >= 2 and not any(e in names for e in exclude)
  return jax.tree_util.tree_map_with_path(keep, params)


def schedule(opt: Any, total_steps: int) -> optax.Schedule:
  """0 -> peak over `opt.warmup_steps`, cosine to peak * `opt.final_lr_ratio` at total_steps."""
  total_steps = validation.positive_int("train.steps", total_steps)
  warmup = min(validation.non_negative_int("opt.warmup_steps", opt.warmup_steps), total_steps)
  peak = validation.positive("opt.peak_lr", opt.peak_lr)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=peak * opt.final_lr_ratio)


def _names(value: Any) -> tuple[str, ...]:
  """A comma-separated string (or a sequence) of parameter names."""
  items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
  return tuple(t.strip() for t in items if t.strip())


def make_optimizer(opt: Any, total_steps: int) -> optax.GradientTransformation:
  """AdamW(schedule, b1, b2, eps, weight_decay, mask) after clip_by_global_norm(opt.clip)."""
  parts = []
  if opt.clip > 0:
    parts.append(optax.clip_by_global_norm(opt.clip))
  parts.append(optax.adamw(
      schedule(opt, total_steps), b1=opt.b1, b2=opt.b2, eps=opt.eps,
      weight_decay=opt.weight_decay,
      mask=lambda p: decay_mask(p, exclude=_names(opt.no_decay))))
  return optax.chain(*parts)
