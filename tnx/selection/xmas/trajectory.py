"""Alignment trajectories: the top-K singular values of every pool example's cross-modal block
at every proxy checkpoint (arXiv 2510.01454, section 4).

The pool is streamed in fixed-size batches (the last one padded and its rows dropped): one
jitted function per batch runs the model with attention capture switched on (`sow`), then
`vmap`s the per-example block + SVD over the batch. Batches are sharded over the (data, fsdp)
axes of a tnx mesh when the batch size divides the device count; parameters are replicated.

Dimension letters: N pool examples, B batch, L sequence, N_I image tokens, T+1 checkpoints,
K singular values.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tnx import sharding as shd
from tnx import validation
from tnx.selection.xmas import attention, spectral

ApplyFn = Callable[[nnx.Module, Mapping[str, jax.Array]], Any]
MASK_KEYS = ("text_mask", "image_mask", "token_mask")


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
  """Attributes:
    mode: 'text_to_image' or 'reference' (see tnx.selection.xmas.attention).
    top_k: K singular values per block (K <= N_I).
    n_image: N_I image tokens per example (columns of the block).
    layers: attention layers to sum (None = all).
    batch_size: B examples per streamed batch.
  """
  mode: str = "text_to_image"
  top_k: int = 5
  n_image: int = 16
  layers: tuple[int, ...] | None = None
  batch_size: int = 64

  def __post_init__(self):
    validation.one_of("mode", self.mode, attention.MODES)
    validation.positive_int("top_k", self.top_k)
    validation.positive_int("n_image", self.n_image)
    validation.positive_int("batch_size", self.batch_size)
    if self.top_k > self.n_image:
      raise ValueError(f"top_k = {self.top_k} must be <= n_image = {self.n_image} (the block "
                       "has N_I columns)")


def default_apply(model: nnx.Module, batch: Mapping[str, jax.Array]) -> Any:
  """Calls the model on the batch's model inputs ('tokens', 'image')."""
  return model({"tokens": batch["tokens"], "image": batch["image"]})


def capture(graphdef: Any, states: Sequence[Any], batch: Mapping[str, jax.Array],
            apply_fn: ApplyFn = default_apply) -> list[dict[str, jax.Array]]:
  """One forward pass with attention capture: per-layer {'probs', 'q', 'k'} for the batch."""
  model = nnx.merge(graphdef, *states)
  model.set_attributes(sow_attention=True)
  _, sown = nnx.capture(apply_fn, nnx.Intermediate)(model, batch)
  return attention.captured_layers(sown)


def example_values(layers: Sequence[dict[str, jax.Array]], masks: Mapping[str, jax.Array],
                   cfg: ExtractConfig) -> jax.Array:
  """[K] top singular values of one example's aggregated block."""
  x = attention.cross_modal_block(layers, masks["text_mask"], masks["image_mask"],
                                  masks["token_mask"], mode=cfg.mode, n_image=cfg.n_image,
                                  layer_ids=cfg.layers)
  return spectral.top_singular_values(x, cfg.top_k)


@functools.lru_cache(maxsize=32)
def make_batch_fn(graphdef: Any, cfg: ExtractConfig, apply_fn: ApplyFn = default_apply
                  ) -> Callable[..., jax.Array]:
  """jitted (states, batch) -> [B, K] top singular values of every example's block (cached:
  every checkpoint and every call with the same model and config reuse one compilation)."""
  def run(states, batch):
    layers = capture(graphdef, states, batch, apply_fn)
    if cfg.mode == "text_to_image":  # keep only what the mode reads
      layers = [{"probs": c["probs"]} for c in layers]
    else:
      layers = [{"q": c["q"], "k": c["k"]} for c in layers]
    masks = {k: batch[k] for k in MASK_KEYS}
    return jax.vmap(lambda lay, m: example_values(lay, m, cfg))(layers, masks)
  return jax.jit(run)


def check_checkpoints(checkpoints: Sequence[Sequence[Any]]) -> None:
  """Every checkpoint must have the first one's tree structure, shapes and dtypes."""
  if len(checkpoints) == 0:
    raise ValueError("checkpoints must hold at least one checkpoint, got none")
  ref = jax.tree_util.tree_structure(checkpoints[0])
  ref_leaves = jax.tree.leaves(checkpoints[0])
  for i, ck in enumerate(checkpoints[1:], start=1):
    if jax.tree_util.tree_structure(ck) != ref:
      raise ValueError(f"checkpoints[{i}] has a different tree structure from checkpoints[0] "
                       "(expected every checkpoint of the same proxy model)")
    for a, b in zip(jax.tree.leaves(ck), ref_leaves):
      if np.shape(a) != np.shape(b) or jnp.result_type(a) != jnp.result_type(b):
        raise ValueError(f"checkpoints[{i}] has a leaf of shape {np.shape(a)} "
                         f"{jnp.result_type(a)} where checkpoints[0] has {np.shape(b)} "
                         f"{jnp.result_type(b)}")


def pool_batches(pool: Mapping[str, np.ndarray], batch_size: int, keys: Sequence[str]):
  """Yields (batch of `keys`, number of real rows) over the pool in order; the last batch is
  padded by repeating its first row."""
  n = len(pool[keys[0]])
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(start + batch_size, n))
    real = len(idx)
    if real < batch_size:
      idx = np.concatenate([idx, np.full(batch_size - real, idx[0])])
    yield {k: pool[k][idx] for k in keys}, real


def check_pool(pool: Mapping[str, np.ndarray], n_image: int) -> int:
  for k in ("tokens", "image") + MASK_KEYS:
    if k not in pool:
      raise ValueError(f"pool must contain {k!r} (keys found: {sorted(pool)})")
  n = len(pool["tokens"])
  if n == 0:
    raise ValueError("pool holds no examples")
  for k in MASK_KEYS:
    validation.shape(f"pool['{k}']", pool[k], tuple(np.shape(pool["tokens"])))
  too_many = int(np.max(np.sum(pool["image_mask"], axis=1)))
  if too_many > n_image:
    raise ValueError(f"pool['image_mask'] marks up to {too_many} image tokens per example; "
                     f"n_image = {n_image}")
  return n


def data_sharding(mesh: Any, batch_size: int) -> Any:
  """Sharding of a streamed batch over the `data` axis of a tnx mesh (ValueError if the axis
  does not divide the batch)."""
  size = mesh.shape[shd.DATA]
  if batch_size % size:
    raise ValueError(f"batch_size = {batch_size} must be divisible by the mesh's data axis "
                     f"({size} devices)")
  return shd.named(mesh, shd.DATA)


def trajectory_values(graphdef: Any, checkpoints: Sequence[Sequence[Any]],
                      pool: Mapping[str, np.ndarray], cfg: ExtractConfig, *,
                      apply_fn: ApplyFn = default_apply, sharding: Any = None,
                      mesh: Any = None) -> np.ndarray:
  """[N, T+1, K] top singular values of every example at every checkpoint.

  Args:
    graphdef: the proxy's nnx GraphDef.
    checkpoints: T+1 checkpoints in training order, each the tuple of states `nnx.merge`
      takes after `graphdef` (e.g. (params, rest)).
    pool: arrays with leading N: 'tokens', 'image' (model inputs read by `apply_fn`),
      'text_mask', 'image_mask', 'token_mask' [N, L] bool.
    sharding: where batches go; None = default device (or, with `mesh`, the data axis).
    mesh: a tnx.sharding mesh; batches are sharded over its `data` axis.
  """
  n = check_pool(pool, cfg.n_image)
  if sharding is None and mesh is not None:
    sharding = data_sharding(mesh, cfg.batch_size)
  check_checkpoints(checkpoints)
  fn = make_batch_fn(graphdef, cfg, apply_fn)
  keys = tuple(sorted(set(pool) & ({"tokens", "image"} | set(MASK_KEYS))))
  out = np.zeros((n, len(checkpoints), cfg.top_k))
  for t, states in enumerate(checkpoints):
    if sharding is not None:  # parameters replicated on the batch's mesh
      states = jax.device_put(tuple(states), jax.sharding.NamedSharding(sharding.mesh, jax.P()))
    row = 0
    for batch, real in pool_batches(pool, cfg.batch_size, keys):
      if sharding is not None:
        batch = jax.device_put(batch, sharding)
      vals = np.asarray(fn(states, batch))
      out[row: row + real, t] = vals[:real]
      row += real
  if not np.all(np.isfinite(out)):
    bad = np.flatnonzero(~np.all(np.isfinite(out), axis=(1, 2)))[:5]
    raise FloatingPointError(f"non-finite singular values for pool examples {bad.tolist()}")
  return out
