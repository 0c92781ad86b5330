"""Stage 2 of TNT training: the stage-1 parameters run with new (smaller) local chunk sizes,
optionally training only the local memories.

The parameter tree never depends on chunk sizes, so stage 2 is a config change:
`set_local_chunk_sizes(model, (1,))` rewrites `cfg.local_chunk_sizes` of every TNT layer in
place. Freezing (default off; the paper fine-tunes everything): `trainable_filter(cfg)` is an
nnx filter for `nnx.Optimizer(model, tx, wrt=...)`, and `param_labels(params)` labels a
parameter pytree "local" / "frozen" for `optax.multi_transform`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import optax
from flax import nnx

from tnx import validation
from tnx.memory.mixer import replace_configs
from tnx.tnt.config import TNTConfig

LOCAL_PARAM_NAMES = ("local_init", "local_ln")


def stage2_config(cfg: TNTConfig, local_chunk_sizes: tuple[int, ...], *,
                  freeze_nonlocal: bool | None = None) -> TNTConfig:
  """`cfg` with new local chunk sizes (same number of local memories)."""
  sizes = tuple(validation.positive_int("local_chunk_sizes", c) for c in local_chunk_sizes)
  if len(sizes) != cfg.num_locals:
    raise ValueError(f"local_chunk_sizes {sizes} must keep the {cfg.num_locals} local "
                     f"memories of stage 1 {cfg.local_chunk_sizes}")
  updates: dict[str, Any] = {"local_chunk_sizes": sizes}
  if freeze_nonlocal is not None:
    updates["stage2_freeze_nonlocal"] = bool(freeze_nonlocal)
  return dataclasses.replace(cfg, **updates)


def set_local_chunk_sizes(model: nnx.Module, local_chunk_sizes: tuple[int, ...], *,
                          freeze_nonlocal: bool | None = None) -> int:
  """Switches every TNT layer inside `model` to stage 2 in place; returns how many changed."""
  return replace_configs(model, lambda cfg: stage2_config(
      cfg, local_chunk_sizes, freeze_nonlocal=freeze_nonlocal)
      if isinstance(cfg, TNTConfig) else None)


def local_filter() -> nnx.filterlib.Filter:
  """nnx filter selecting the local memories' parameters (W_init and LN of every local)."""
  return nnx.All(nnx.Param, nnx.Any(*(nnx.PathContains(n) for n in LOCAL_PARAM_NAMES)))


def trainable_filter(cfg: TNTConfig) -> nnx.filterlib.Filter:
  """What stage 2 trains: the local memories only if `cfg.stage2_freeze_nonlocal`, else all."""
  return local_filter() if cfg.stage2_freeze_nonlocal else nnx.Param


def _is_local(path: tuple[Any, ...]) -> bool:
  names = {str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))) for p in path}
  return any(n in names for n in LOCAL_PARAM_NAMES)


def param_labels(params: Any) -> Any:
  """Labels each leaf of a parameter pytree (e.g. `nnx.state(model, nnx.Param)`) "local" or
  "frozen"."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: "local" if _is_local(path) else "frozen", params)


def freeze_nonlocal(tx: optax.GradientTransformation, params: Any
                    ) -> optax.GradientTransformation:
  """Wraps `tx` so only the local memories' parameters are updated (others get zero update)."""
  return optax.multi_transform({"local": tx, "frozen": optax.set_to_zero()},
                               param_labels(params))
