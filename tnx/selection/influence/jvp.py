"""JVP embeddings: random directional derivatives of an early representation of each sample.

Influence Distillation (arXiv 2505.19051, Sec. 4) embeds every pool sample by

  e(x) = S concat_j ( d/dt h(theta + t v_j; x) |_{t=0} ),   j = 1..r,

where h is a cheap feature map (for an LM: the last-token hidden state after the embedding
layer and the first few blocks, then the final norm), v_j are Gaussian tangents over all the
parameters h uses, and S an optional random projection. Inner products of these embeddings are
a random sketch of the per-sample Jacobians of h, which tracks gradient similarity; they cost r
forward-mode passes through the first blocks only. The primal pass is shared by the r tangents
(`jax.linearize`).

Dimension letters: N samples, D feature width, R tangents, E output width.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from tnx import validation
from tnx.selection.influence.grads import example_mapper, num_examples
from tnx.selection.influence.sketch import RademacherSketch

FeatureFn = Callable[[Any, Any], jax.Array]  # (params, one example) -> features [D]


def random_tangents(key: jax.Array, params: Any, num: int) -> Any:
  """`num` standard-normal tangents shaped like `params` (a pytree with a leading R axis)."""
  num = validation.positive_int("num_tangents", num)
  leaves, treedef = jax.tree.flatten(params)
  sizes = [int(np.prod(jnp.shape(x))) for x in leaves]
  dtype = jnp.result_type(*leaves)
  flat_RxP = jax.random.normal(key, (num, sum(sizes)), dtype)  # one draw: one compile
  out, offset = [], 0
  for x, size in zip(leaves, sizes):
    part = flat_RxP[:, offset:offset + size].reshape((num,) + jnp.shape(x))
    out.append(part.astype(jnp.result_type(x)))
    offset += size
  return jax.tree.unflatten(treedef, out)


def jvp_embedding_fn(feature_fn: FeatureFn, *, proj_dim: int | None = None,
                     feature_dim: int | None = None, num_tangents: int = 2, seed: int = 0,
                     chunk_size: int = 64, mesh: Mesh | None = None
                     ) -> Callable[[Any, Any, Any], jax.Array]:
  """A compiled function `(params, tangents, examples) -> E_NxE` of JVP embeddings.

  Args:
    feature_fn: h(params, example) -> [D].
    proj_dim: E; None keeps the R * D concatenated JVPs (then feature_dim is not needed).
    feature_dim: D (needed with proj_dim, to size the Rademacher projection).
    num_tangents: R (only used to size the projection).
    seed: seed of the projection.
    chunk_size, mesh: see `grads.example_mapper` (pool rows split over `data`).
  """
  sketch = None
  if proj_dim is not None:
    validation.positive_int("proj_dim", proj_dim)
    width = validation.positive_int("feature_dim", feature_dim) * validation.positive_int(
        "num_tangents", num_tangents)
    sketch = RademacherSketch(width, proj_dim, seed)

  def one(consts, example):
    params, tangents = consts
    _, lin = jax.linearize(lambda p: feature_fn(p, example), params)
    j_RxD = jax.vmap(lin)(tangents)
    flat = j_RxD.reshape(-1)
    return sketch(flat) if sketch is not None else flat

  mapper = example_mapper(one, chunk_size=chunk_size, mesh=mesh)
  return lambda params, tangents, examples: mapper((params, tangents), examples)


def jvp_embeddings(feature_fn: FeatureFn, params: Any, examples: Any, *, key: jax.Array,
                   num_tangents: int = 2, proj_dim: int | None = None, chunk_size: int = 64,
                   mesh: Mesh | None = None) -> jax.Array:
  """E_NxE for `examples`: JVPs of `feature_fn` along `num_tangents` Gaussian tangents over
  all of `params`, concatenated, then Rademacher-projected to `proj_dim` if given."""
  num_examples(examples)
  k_tan, k_proj = jax.random.split(key)
  tangents = random_tangents(k_tan, params, num_tangents)
  feature_dim = None
  if proj_dim is not None:
    first = jax.tree.map(lambda x: x[0], examples)
    feature_dim = int(jax.eval_shape(feature_fn, params, first).shape[-1])
  seed = int(jax.random.randint(k_proj, (), 0, 2**31 - 1))
  fn = jvp_embedding_fn(feature_fn, proj_dim=proj_dim, feature_dim=feature_dim,
                        num_tangents=num_tangents, seed=seed, chunk_size=chunk_size, mesh=mesh)
  return fn(params, tangents, examples)


def last_weighted_position(weights_L: jax.Array) -> jax.Array:
  """Index of the last position with weight > 0 (0 if none)."""
  l = weights_L.shape[-1]
  pos = jnp.where(weights_L > 0, jnp.arange(l), -1)
  return jnp.maximum(jnp.max(pos, axis=-1), 0)


def lm_prefix_features(graphdef: Any, params: Any, rest: Any, num_blocks: int, *,
                       pooling: str = "last") -> tuple[Any, FeatureFn]:
  """(prefix params, h) for a tnx.models.LM: h runs the embedding, the first `num_blocks`
  blocks and the final norm, and returns the hidden state [D] at the example's last position
  with loss weight > 0 (the end of the response), or with pooling='mean' the mean over the
  positions up to it.

  Args:
    graphdef, params, rest: `nnx.split(model, nnx.Param, ...)` of an LM, params and rest as
      pure dicts (nnx.to_pure_dict).
    num_blocks: K_b, 1 <= K_b <= number of blocks.
  Returns:
    prefix: the sub-dict of params that h depends on (JVP tangents range over exactly these);
    h(prefix, example): example is a dict with 'inputs' [L] and 'weights' [L]. h depends on
      `params` only through their shapes (the unused blocks are zero placeholders), so one h
      (and everything compiled from it) serves every model of the same configuration.
  """
  n_layers = len(params["blocks"])
  validation.one_of("pooling", pooling, ("last", "mean"))
  num_blocks = validation.positive_int("num_blocks", num_blocks)
  if num_blocks > n_layers:
    raise ValueError(f"num_blocks={num_blocks} exceeds the model's {n_layers} blocks")
  block_keys = sorted(params["blocks"])[:num_blocks]
  prefix = {"embed": params["embed"], "final_norm": params["final_norm"],
            "blocks": {b: params["blocks"][b] for b in block_keys}}
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)),
                        params)

  def features(prefix_params, example):
    unused = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)  # never executed
    full = dict(unused, embed=prefix_params["embed"], final_norm=prefix_params["final_norm"],
                blocks={**unused["blocks"], **prefix_params["blocks"]})
    model = nnx.merge(graphdef, full, rest)
    x_1xLxD = model.embed(example["inputs"][None]).astype(model.cfg.compute_dtype)
    for b in block_keys:
      x_1xLxD = model.blocks[b](x_1xLxD)
    h_LxD = model.final_norm(x_1xLxD)[0]
    last = last_weighted_position(example["weights"])
    if pooling == "last":
      h_D = h_LxD[last]
    else:
      upto_L = jnp.arange(h_LxD.shape[0]) <= last
      h_D = jnp.sum(jnp.where(upto_L[:, None], h_LxD, 0.0), axis=0) / (last + 1)
    return h_D.astype(jnp.promote_types(h_D.dtype, jnp.float32))

  return prefix, features
