"""Q-K projection of the local queries (TNT Eq. 7): q_t -> M_t q_t with M_t = sum k k^T / |k|^2.

The sum runs over the keys of the current scope up to and including t: the whole local shard
("shard" scope: a running sum reset with the local memory) or the current local chunk
("chunk" scope). Computed in its chunkwise linear-attention form, never forming a K x K
matrix per token: with k^ = k / sqrt(|k|^2 + eps) and blocks of `block` tokens,

    M_t q_t = P_b q_t + sum_{tau in block b, tau <= t} k^_tau (k^_tau . q_t),
    P_b = sum_{tau in blocks < b} k^_tau k^_tau^T        (one K x K prefix per block).

With reset_every=C the prefix term is dropped and the block is the chunk. M_t is symmetric, so
(M_t q_t)^T = q_t^T M_t. Optional rescales (deviations from the paper): "count" divides by the
number of keys in scope, "l2" re-normalizes the projected query to unit length. A non-finite
key at token t makes exactly the outputs of its scope at and after t NaN (selects, never a
product with a zero mask), so it never reaches an earlier token.

Shapes: q, k [B, H, L, K]; batch elements and heads never mix.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tnx import validation

_EPS = 1e-6


def normalize_keys(k: jax.Array, eps: float = _EPS) -> jax.Array:
  """k / sqrt(|k|^2 + eps) along the last axis (the 1/|k|^2 of M_t)."""
  return k * jax.lax.rsqrt(jnp.sum(jnp.square(k), axis=-1, keepdims=True) + eps)


def _rescale(out: jax.Array, count: jax.Array, rescale: str, eps: float) -> jax.Array:
  if rescale == "count":
    return out / jnp.maximum(count, 1).astype(out.dtype)[..., None]
  if rescale == "l2":
    return out * jax.lax.rsqrt(jnp.sum(jnp.square(out), axis=-1, keepdims=True) + eps)
  return out


def qk_project(q: jax.Array, k: jax.Array, *, reset_every: int | None = None,
               block: int = 64, rescale: str = "none", eps: float = _EPS) -> jax.Array:
  """Projected queries M_t q_t.

  Args:
    q, k: [B, H, L, K]. The running sum starts at index 0 (fold shards into the batch first).
    reset_every: None for a running sum over the whole sequence ("shard" scope), or C to
      restart the sum every C tokens ("chunk" scope).
    block: computation block for the running sum (any value gives the same result).
    rescale: "none", "count" or "l2".
  Returns:
    [B, H, L, K].
  """
  if q.ndim != 4:
    raise ValueError(f"q must have shape [B, H, L, K], got {list(q.shape)}")
  if q.shape[2] == 0:
    raise ValueError(f"q must hold at least one token (L >= 1), got shape {list(q.shape)}")
  validation.shape("k", k, q.shape)
  validation.one_of("rescale", rescale, ("none", "count", "l2"))
  validation.positive("eps", eps)
  validation.positive_int("block", block)
  if reset_every is not None:
    validation.positive_int("reset_every", reset_every)
  length = q.shape[2]
  blk = reset_every if reset_every is not None else min(block, length)
  n = -(-length // blk)
  pad = n * blk - length
  # A non-finite key reaches only the tokens whose sum contains it: bad keys are zeroed before
  # the masked products (0 * NaN would leak backward) and their scope is set to NaN after.
  bad = ~jnp.all(jnp.isfinite(k), axis=-1)  # [B, H, L]
  kh = normalize_keys(jnp.where(bad[..., None], 0.0, k), eps)
  qp, kp = (jnp.pad(a, ((0, 0), (0, 0), (0, pad), (0, 0))) for a in (q, kh))
  qb = qp.reshape(qp.shape[:2] + (n, blk, qp.shape[-1]))
  kb = kp.reshape(qb.shape)
  hi = jax.lax.Precision.HIGHEST
  mask = np.tril(np.ones((blk, blk), bool))
  scores = jnp.where(mask, jnp.einsum("bhnck,bhnsk->bhncs", qb, kb, precision=hi), 0.0)
  out = jnp.einsum("bhncs,bhnsk->bhnck", scores, kb, precision=hi)
  if reset_every is None and n > 1:
    per_block = jnp.einsum("bhnsk,bhnsj->bhnkj", kb, kb, precision=hi)
    # Exclusive prefix over blocks as a shifted cumulative sum (no subtraction).
    prefix = jnp.cumsum(per_block, axis=2)
    prefix = jnp.concatenate([jnp.zeros_like(prefix[:, :, :1]), prefix[:, :, :-1]], axis=2)
    out = out + jnp.einsum("bhnck,bhnkj->bhncj", qb, prefix, precision=hi)
  out = out.reshape(qp.shape)[:, :, :length]
  pos = jnp.arange(length)
  seen = jnp.cumsum(bad.astype(jnp.int32), axis=-1)  # bad keys among 0..t (exact integers)
  if reset_every is not None:  # ... minus those before the start of t's scope
    before = jnp.concatenate([jnp.zeros_like(seen[..., :1]), seen], axis=-1)
    seen = seen - before[..., (pos // reset_every) * reset_every]
  out = jnp.where((seen > 0)[..., None], jnp.nan, out)
  count = (pos % reset_every if reset_every is not None else pos) + 1
  return _rescale(out, count, rescale, eps)


def qk_carry(k: jax.Array, start: int, eps: float = _EPS) -> tuple[jax.Array, jax.Array]:
  """Decode carry after a prefill: (M [B, H, K, K] = sum of k^ k^T over keys[start:],
  count [B] = number of those keys). k [B, H, L, K]."""
  kh = normalize_keys(k[:, :, start:], eps)
  m = jnp.einsum("bhsk,bhsj->bhkj", kh, kh, precision=jax.lax.Precision.HIGHEST)
  return m, jnp.full((k.shape[0],), k.shape[2] - start, jnp.int32)


def qk_decode(m: jax.Array, count: jax.Array, q: jax.Array, k: jax.Array, reset: jax.Array,
              *, rescale: str = "none", eps: float = _EPS
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One token: reset the sum where `reset` [B] is true, add k^ k^T, project q.

  Args: m [B, H, K, K], count [B], q, k [B, H, K], reset [B] bool.
  Returns: (M q [B, H, K], new m, new count).
  """
  kh = normalize_keys(k, eps)
  m = jnp.where(reset[:, None, None, None], 0.0, m) + kh[..., :, None] * kh[..., None, :]
  count = jnp.where(reset, 0, count) + 1
  out = jnp.einsum("bhkj,bhj->bhk", m, q, precision=jax.lax.Precision.HIGHEST)
  return _rescale(out, jnp.broadcast_to(count[:, None], out.shape[:2]), rescale, eps), m, count
