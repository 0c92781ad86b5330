"""The type-mixture distribution over sequences of weekly topic sets (arXiv 2506.23855, Sec. 5).

A synthetic user picks a type t uniformly among T (weights fixed at 1/T); for every week w and
slot s it draws x_{w,s} ~ Categorical(softmax(logits[t, w, s])), independently; week w's set
is the set of distinct values {x_{w,1}, ..., x_{w,K}} (so it can have fewer than K topics).

Closed-form marginals of one type (slots independent), with nbar_w(a) = prod_s (1 - p_{w,s}(a))
the probability that a is absent from week w:
  P(a in S_w)                 = 1 - nbar_w(a)
  P(a, b in S_w), a != b      = 1 - nbar_w(a) - nbar_w(b) + prod_s (1 - p_{w,s}(a) - p_{w,s}(b))
  P(a in S_w, b in S_v), w!=v = (1 - nbar_w(a)) (1 - nbar_v(b))   (weeks independent given t)
and the mixture's marginal is the average over types.

Sampling draws every slot by inverse CDF: a binary search of the slot's cumulative
distribution (clipped to the last topic), so no [users, W, K, O] array is ever formed;
`jax.lax.map` runs over blocks of users.

Dimension letters: T types, W weeks, K slots, O topics, Q queries, N users, B users per block.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from tnx import validation


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TypeMixture:
  """logits_TxWxKxO: slot logits of every type, week and slot."""
  logits_TxWxKxO: jax.Array

  @property
  def shape(self) -> tuple[int, int, int, int]:
    return tuple(self.logits_TxWxKxO.shape)

  def probs(self) -> jax.Array:
    return jax.nn.softmax(self.logits_TxWxKxO, axis=-1)


def init_mixture(key: jax.Array, num_types: int, num_weeks: int, num_slots: int,
                 num_topics: int, std: float = 0.001, dtype=jnp.float32) -> TypeMixture:
  """Gaussian logits with standard deviation `std` (> 0)."""
  for name, v in (("num_types", num_types), ("num_weeks", num_weeks),
                  ("num_slots", num_slots), ("num_topics", num_topics)):
    validation.positive_int(name, v)
  std = validation.positive("std", std)
  shape = (num_types, num_weeks, num_slots, num_topics)
  return TypeMixture(std * jax.random.normal(key, shape, dtype))


def absent_probs(probs_TxWxKxO: jax.Array) -> jax.Array:
  """nbar [T, W, O]: probability that a topic is in none of a week's slots."""
  return jnp.prod(1.0 - probs_TxWxKxO, axis=-2)


def pair_marginals(mixture: TypeMixture, weeks_Qx2: jax.Array, topics_Qx2: jax.Array
                   ) -> jax.Array:
  """Closed-form mixture marginal of each query (w0, a; w1, b).

  A query is single-topic P(a in S_w) when w0 = w1 and a = b, within-week P(a, b in S_w) when
  w0 = w1 and a != b, and cross-week P(a in S_w0, b in S_w1) when w0 != w1.

  Returns:
    [Q] marginals.
  """
  p = mixture.probs()
  # Topic-major layouts, so each query gathers (and its gradient scatters) whole [T, K] rows.
  p_WxOxTxK = jnp.transpose(p, (1, 3, 0, 2))
  present_WxOxT = 1.0 - jnp.transpose(absent_probs(p), (1, 2, 0))
  w0, w1 = weeks_Qx2[:, 0], weeks_Qx2[:, 1]
  a, b = topics_Qx2[:, 0], topics_Qx2[:, 1]
  present_a = present_WxOxT[w0, a]                              # [Q, T]
  present_b = present_WxOxT[w1, b]
  pa, pb = p_WxOxTxK[w0, a], p_WxOxTxK[w1, b]                   # [Q, T, K]; pb used if w1 = w0
  both = present_a + present_b - 1.0 + jnp.prod(1.0 - pa - pb, axis=-1)
  same_week = (w0 == w1)[:, None]
  per_type = jnp.where(same_week & (a == b)[:, None], present_a,
                       jnp.where(same_week, both, present_a * present_b))
  return jnp.mean(per_type, axis=1)


@functools.partial(jax.jit, static_argnames=("lags",))
def marginal_tables(mixture: TypeMixture, lags: tuple[int, ...] = (1,)) -> dict:
  """All closed-form marginals as tables.

  Returns a dict with 'single' [W, O], 'within' [W, O, O] (diagonal = single) and, for each
  lag L in `lags`, f'lag{L}' [W - L, O, O] with entry [w, a, b] = P(a in S_w, b in S_{w+L}).
  """
  p = mixture.probs()
  present = 1.0 - absent_probs(p)                               # [T, W, O]

  def within_one_type(p_WxKxO):
    q = 1.0 - p_WxKxO[..., :, None] - p_WxKxO[..., None, :]      # [W, K, O, O]
    pres = 1.0 - jnp.prod(1.0 - p_WxKxO, axis=-2)
    both = pres[..., :, None] + pres[..., None, :] - 1.0 + jnp.prod(q, axis=-3)
    eye = jnp.eye(p_WxKxO.shape[-1], dtype=bool)
    return jnp.where(eye, pres[..., :, None], both)

  within = jnp.mean(jax.lax.map(within_one_type, p), axis=0)
  out = {"single": jnp.mean(present, axis=0), "within": within}
  for lag in lags:
    out[f"lag{lag}"] = jnp.einsum("twa,twb->wab", present[:, :-lag], present[:, lag:]) / p.shape[0]
  return out


def _bisect(cdf_flat: jax.Array, row: jax.Array, u: jax.Array, num_topics: int) -> jax.Array:
  """Smallest i with cdf[row, i] > u (clipped to O - 1): the inverse CDF of each row."""
  lo = jnp.zeros_like(row)
  hi = jnp.full_like(row, num_topics - 1)

  def step(_, bounds):
    lo, hi = bounds
    mid = (lo + hi) // 2
    above = cdf_flat[row * num_topics + mid] > u
    open_ = lo < hi                  # a closed interval (lo == hi) is the answer
    return (jnp.where(open_ & ~above, mid + 1, lo), jnp.where(open_ & above, mid, hi))

  lo, _ = jax.lax.fori_loop(0, max(1, math.ceil(math.log2(num_topics))), step, (lo, hi))
  return lo


@functools.partial(jax.jit, static_argnames=("num_users", "block_size"))
def _sample_chunk(key: jax.Array, cdf_TxWxKxO: jax.Array, num_users: int, block_size: int
                  ) -> tuple[jax.Array, jax.Array]:
  t, w, k, o = cdf_TxWxKxO.shape
  cdf_flat = cdf_TxWxKxO.reshape(-1)
  slot_row = jnp.arange(w * k, dtype=jnp.int32).reshape(w, k)

  def one_block(block_key):
    k_type, k_u = jax.random.split(block_key)
    types = jax.random.randint(k_type, (block_size,), 0, t, dtype=jnp.int32)
    u = jax.random.uniform(k_u, (block_size, w, k), cdf_flat.dtype)
    row = types[:, None, None] * (w * k) + slot_row[None]
    return _bisect(cdf_flat, row, u, o).astype(jnp.int32), types

  num_blocks = -(-num_users // block_size)
  slots, types = jax.lax.map(one_block, jax.random.split(key, num_blocks))
  return slots.reshape(-1, w, k)[:num_users], types.reshape(-1)[:num_users]


def slot_cdf(mixture: TypeMixture) -> jax.Array:
  """[T, W, K, O] cumulative slot distributions (the sampler's table)."""
  return jnp.cumsum(mixture.probs(), axis=-1)


def sample_chunks(key: jax.Array, mixture: TypeMixture, num_users: int,
                  chunk_users: int = 1 << 16, block_size: int = 4096):
  """Yields (start, slots [n, W, K] int32 topic indices, types [n]) chunk by chunk.

  Chunk c is drawn with jax.random.fold_in(key, c), so the users do not depend on how the
  caller consumes them; memory is O(chunk_users) whatever num_users. The next chunk is
  dispatched before the current one is handed out, so sampling overlaps the consumer.
  """
  num_users = validation.positive_int("num_users", num_users)
  chunk_users = min(validation.positive_int("chunk_users", chunk_users), num_users)
  block_size = validation.positive_int("block_size", min(block_size, chunk_users))
  cdf = slot_cdf(mixture)
  starts = list(range(0, num_users, chunk_users))
  # Every chunk has the full shape (one compilation); the last one is trimmed.
  draw = lambda c: _sample_chunk(jax.random.fold_in(key, c), cdf, chunk_users, block_size)
  pending = draw(0)
  for c, start in enumerate(starts):
    current = pending
    if c + 1 < len(starts):
      pending = draw(c + 1)
    n = min(chunk_users, num_users - start)
    yield start, np.asarray(current[0])[:n], np.asarray(current[1])[:n]


def sample_slots(key: jax.Array, mixture: TypeMixture, num_users: int,
                 chunk_users: int = 1 << 16, block_size: int = 4096
                 ) -> tuple[np.ndarray, np.ndarray]:
  """All raw slot draws [N, W, K] (topic indices, repeats possible) and types [N] in memory."""
  parts = list(sample_chunks(key, mixture, num_users, chunk_users, block_size))
  return (np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]))
