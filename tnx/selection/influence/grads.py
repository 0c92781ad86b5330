"""Per-example gradients over a parameter subset, exact or sketched, chunked and sharded.

A *subset* chooses which parameters the gradients are taken over (Influence Distillation,
arXiv 2505.19051, restricts them to e.g. the MLP output matrices of a large LM). It is given as
a boolean pytree matching the parameters (a leaf is True/False, or a boolean array of the
leaf's shape selecting single entries) or, for Flax NNX models, as any nnx filter
(`subset_mask_from_filter`). Gradients come back flattened to vectors of the subset's size P,
in a fixed order shared with `ParamSubset.flatten` (used for optimizer preconditioners).

Dimension letters: N examples, P selected parameters, K sketch dimension.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, PartitionSpec

from tnx import sharding as shd
from tnx import validation

LossFn = Callable[[Any, Any], jax.Array]  # (params, one example) -> scalar loss


def subset_mask_from_filter(state: Any, wrt: Any) -> dict[Any, Any]:
  """Boolean pytree over `nnx.to_pure_dict(state)` that is True where the nnx filter `wrt`
  matches (e.g. `nnx.PathContains('down')`, `nnx.Param`, a callable (path, variable) -> bool).

  Args:
    state: an `nnx.State` of parameters (e.g. `nnx.state(model, nnx.Param)`) or an nnx Module.
  """
  if isinstance(state, nnx.Module):
    state = nnx.state(state, nnx.Param)
  predicate = nnx.filterlib.to_predicate(wrt)
  chosen = {tuple(path): bool(predicate(path, var)) for path, var in nnx.to_flat_state(state)}
  pure = nnx.to_pure_dict(state)

  def pick(path, _):
    return chosen[tuple(getattr(k, "key", getattr(k, "idx", k)) for k in path)]
  mask = jax.tree_util.tree_map_with_path(pick, pure)
  if not any(jax.tree.leaves(mask)):
    raise ValueError(f"wrt={wrt!r} selects no parameter of the model")
  return mask


class ParamSubset:
  """The selected part of a parameter pytree, as a flat vector of P entries.

  Args:
    params: the parameter pytree (only shapes/structure are used).
    mask: None (all leaves), or a pytree with the structure of `params` whose leaves are
      Python/NumPy bools (whole leaf in or out) or boolean arrays of the leaf's shape
      (single entries, e.g. a fixed random element mask).
  """

  def __init__(self, params: Any, mask: Any = None):
    leaves, self.treedef = jax.tree.flatten(params)
    self.shapes = [tuple(np.shape(x)) for x in leaves]
    if mask is None:
      mask_leaves = [True] * len(leaves)
    else:
      mask_leaves, mask_def = jax.tree.flatten(mask)
      if mask_def != self.treedef:
        raise ValueError(f"mask must have the structure of params; got {mask_def}, expected "
                         f"{self.treedef}")
    self.leaf_ids: list[int] = []
    self.entry_ids: dict[int, np.ndarray | None] = {}
    size = 0
    for i, (m, shp) in enumerate(zip(mask_leaves, self.shapes)):
      m = np.asarray(m)
      if m.dtype != np.bool_:
        raise ValueError(f"mask leaves must be booleans or boolean arrays, got dtype {m.dtype}")
      if m.shape == ():
        if m:
          self.leaf_ids.append(i)
          self.entry_ids[i] = None
          size += int(np.prod(shp))
      else:
        if m.shape != shp:
          raise ValueError(f"mask leaf of shape {m.shape} does not match parameter {shp}")
        if m.any():
          self.leaf_ids.append(i)
          self.entry_ids[i] = np.flatnonzero(m.reshape(-1))
          size += int(m.sum())
    if size == 0:
      raise ValueError("mask selects no parameter entry")
    self.size = size
    self._key = (self.treedef, tuple(self.shapes), tuple(
        (i, None if self.entry_ids[i] is None else self.entry_ids[i].tobytes())
        for i in self.leaf_ids))

  def __hash__(self) -> int:  # equal subsets share compiled per-example functions
    return hash(self._key)

  def __eq__(self, other: object) -> bool:
    return isinstance(other, ParamSubset) and self._key == other._key

  def select(self, params: Any) -> list[jax.Array]:
    """The selected leaves (whole arrays; entry masks are applied by `flatten_selected`)."""
    leaves = jax.tree.leaves(params)
    return [leaves[i] for i in self.leaf_ids]

  def combine(self, params: Any, selected: list[jax.Array]) -> Any:
    """`params` with the selected leaves replaced by `selected`."""
    leaves = list(jax.tree.leaves(params))
    for i, x in zip(self.leaf_ids, selected):
      leaves[i] = x
    return jax.tree.unflatten(self.treedef, leaves)

  def flatten_selected(self, selected: list[jax.Array]) -> jax.Array:
    """[P] vector from leaves in the order of `select`."""
    parts = []
    for i, x in zip(self.leaf_ids, selected):
      flat = jnp.reshape(x, (-1,))
      idx = self.entry_ids[i]
      parts.append(flat if idx is None else flat[idx])
    return jnp.concatenate(parts)

  def flatten(self, tree: Any) -> jax.Array:
    """[P] vector of the selected entries of a pytree shaped like params (a gradient, an
    optimizer preconditioner); compiled once per subset."""
    return _flatten_jit(self, tree)

  def unflatten(self, vec_P: jax.Array, like: Any) -> Any:
    """A pytree shaped like `like`, zero outside the subset, `vec_P` inside."""
    return _unflatten_jit(self, vec_P, like)

  def _unflatten(self, vec_P: jax.Array, like: Any) -> Any:
    leaves = [jnp.zeros_like(x) for x in jax.tree.leaves(like)]
    offset = 0
    for i in self.leaf_ids:
      idx = self.entry_ids[i]
      count = int(np.prod(self.shapes[i])) if idx is None else len(idx)
      chunk = vec_P[offset:offset + count].astype(leaves[i].dtype)
      flat = leaves[i].reshape(-1)
      flat = chunk if idx is None else flat.at[idx].set(chunk)
      leaves[i] = flat.reshape(self.shapes[i])
      offset += count
    return jax.tree.unflatten(self.treedef, leaves)


@functools.partial(jax.jit, static_argnums=0)
def _flatten_jit(subset: ParamSubset, tree: Any) -> jax.Array:
  return subset.flatten_selected(subset.select(tree))


@functools.partial(jax.jit, static_argnums=0)
def _unflatten_jit(subset: ParamSubset, vec_P: jax.Array, like: Any) -> Any:
  return subset._unflatten(vec_P, like)


def example_mapper(fn: Callable[[Any, Any], Any], *, chunk_size: int,
                   mesh: Mesh | None = None) -> Callable[[Any, Any], Any]:
  """A compiled-once function `(consts, examples) -> stacked fn(consts, example)` over the
  leading axis N of `examples`.

  Chunks of `chunk_size` examples are vectorized (`lax.map` with `batch_size`), so memory is
  O(chunk_size) per device. With a `mesh`, the examples are split over its `data` axis and each
  device maps over its own rows (`consts`, e.g. parameters, are replicated); the output is a
  global array sharded over `data`. N need not divide the data size (rows are padded with
  copies of row 0 and the padding is dropped).
  """
  chunk_size = validation.positive_int("chunk_size", chunk_size)

  def local(c, ex):
    m = _num_examples(ex)
    return jax.lax.map(lambda e: fn(c, e), ex, batch_size=min(chunk_size, m))

  if mesh is None or mesh.shape[shd.DATA] == 1:
    return jax.jit(local)
  d = mesh.shape[shd.DATA]
  row = PartitionSpec(shd.DATA)
  # check_vma=False: gradients taken inside must stay per device (no implicit psum over data
  # of the replicated parameters' cotangents).
  mapped = jax.jit(shd.shard_map(local, mesh=mesh, in_specs=(PartitionSpec(), row),
                                 out_specs=row, axis_names={shd.DATA}, check_vma=False))

  def run(consts, examples):
    n = _num_examples(examples)
    pad = (-n) % d
    if pad:
      examples = jax.tree.map(
          lambda x: jnp.concatenate([x, jnp.repeat(x[:1], pad, axis=0)], axis=0), examples)
    examples = jax.device_put(examples, shd.named(mesh, shd.DATA))
    out = mapped(consts, examples)
    return jax.tree.map(lambda x: x[:n], out) if pad else out
  return run


def map_examples(fn: Callable[[Any, Any], Any], consts: Any, examples: Any, *,
                 chunk_size: int, mesh: Mesh | None = None) -> Any:
  """One-off `example_mapper(fn, ...)(consts, examples)` (compiles on every call; build the
  mapper once for repeated use)."""
  return example_mapper(fn, chunk_size=chunk_size, mesh=mesh)(consts, examples)


def _num_examples(examples: Any) -> int:
  leaves = jax.tree.leaves(examples)
  if not leaves:
    raise ValueError("examples must be a pytree of arrays with a leading example axis")
  n = int(np.shape(leaves[0])[0]) if np.ndim(leaves[0]) else 0
  if any(np.ndim(x) == 0 or np.shape(x)[0] != n for x in leaves):
    raise ValueError("every leaf of examples must share the leading example axis, got shapes "
                     f"{[np.shape(x) for x in leaves]}")
  return n


def num_examples(examples: Any, name: str = "examples") -> int:
  """N of an examples pytree; ValueError naming `name` if it holds no example."""
  try:
    n = _num_examples(examples)
  except ValueError as e:
    raise ValueError(f"{name}: {e}") from None
  if n == 0:
    raise ValueError(f"{name} must hold at least one example, got 0")
  return n


def take_examples(examples: Any, idx: Any) -> Any:
  """Rows `idx` of every leaf."""
  return jax.tree.map(lambda x: jnp.take(x, jnp.asarray(idx), axis=0), examples)


def safe_normalize(v: jax.Array, axis: int = -1) -> jax.Array:
  """v / ||v|| along `axis`; an all-zero vector stays zero (no 0/0)."""
  sq = jnp.sum(jnp.square(v), axis=axis, keepdims=True)
  ok = sq > 0
  return jnp.where(ok, v * jax.lax.rsqrt(jnp.where(ok, sq, 1.0)), 0.0)


def per_example_grad_fn(loss_fn: LossFn, subset: ParamSubset, *,
                        sketch: Callable[[jax.Array], jax.Array] | None = None,
                        normalize: bool = False, chunk_size: int = 32,
                        mesh: Mesh | None = None
                        ) -> Callable[[Any, Any, jax.Array | None], jax.Array]:
  """A function `(params, examples, precondition_P) -> G_NxP` (or N x K when sketched).

  Row i is `S(normalize(precondition * flat(grad loss_fn(params, example_i))))`: the gradient
  over `subset`, multiplied element-wise by `precondition` (e.g. Adam's `a`, or None), unit
  normalized when `normalize`, and projected by `sketch` (a function [P] -> [K]) if given.
  Computed as a `vmap` of `grad` inside `lax.map` chunks (see `example_mapper`); compiled
  once per input shape, and shared by calls with equal arguments (same loss function object).
  """
  return _grad_fn(loss_fn, subset, sketch, bool(normalize), int(chunk_size), mesh)


@functools.lru_cache(maxsize=64)
def _grad_fn(loss_fn, subset, sketch, normalize, chunk_size, mesh):
  def one(consts, example):
    params, precondition = consts
    selected = subset.select(params)
    grads = jax.grad(lambda s: loss_fn(subset.combine(params, s), example))(selected)
    v = subset.flatten_selected(grads)
    if precondition is not None:
      v = v * precondition
    if normalize:
      v = safe_normalize(v)
    return sketch(v) if sketch is not None else v

  mapper = example_mapper(one, chunk_size=chunk_size, mesh=mesh)
  return lambda params, examples, precondition=None: mapper((params, precondition), examples)


def per_example_grads(loss_fn: LossFn, params: Any, examples: Any, *,
                      subset: ParamSubset | None = None, precondition: jax.Array | None = None,
                      sketch: Callable[[jax.Array], jax.Array] | None = None,
                      normalize: bool = False, chunk_size: int = 32,
                      mesh: Mesh | None = None) -> jax.Array:
  """G_NxP (or N x K sketched) for `examples`; see `per_example_grad_fn`."""
  num_examples(examples)
  subset = subset or ParamSubset(params)
  if precondition is not None:
    validation.shape("precondition", precondition, (subset.size,))
  fn = per_example_grad_fn(loss_fn, subset, sketch=sketch, normalize=normalize,
                           chunk_size=chunk_size, mesh=mesh)
  return fn(params, examples, precondition)


def mean_loss_fn(loss_fn: LossFn, examples: Any) -> Callable[[Any], jax.Array]:
  """params -> mean of loss_fn(params, example) over `examples` (a target loss L(θ; T, 1))."""
  return lambda params: jnp.mean(jax.vmap(lambda e: loss_fn(params, e))(examples))


def flat_hvp_fn(loss: Callable[[Any], jax.Array], params: Any, subset: ParamSubset
                ) -> Callable[[jax.Array], jax.Array]:
  """v_P -> H v_P, the Hessian of `loss` (a function of params) restricted to the subset,
  by forward-over-reverse differentiation (no Hessian is formed)."""
  selected = subset.select(params)

  def flat_grad(vec_sel):
    return subset.flatten_selected(
        jax.grad(lambda s: loss(subset.combine(params, s)))(vec_sel))

  def to_leaves(v_P):
    like = subset.combine(params, selected)
    tree = subset.unflatten(v_P, like)
    return subset.select(tree)

  def hvp(v_P):
    return jax.jvp(flat_grad, (selected,), (to_leaves(v_P),))[1]
  return hvp
