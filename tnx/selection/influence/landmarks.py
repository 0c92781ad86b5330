"""Choosing the landmark samples whose gradients are computed exactly.

Influence Distillation (arXiv 2505.19051, Sec. 4) draws landmarks uniformly at random (the
authors' code) and compares other strategies in an ablation; three are provided here, all on
the per-sample embeddings E (rows may be sharded; the reductions run under jit):

- 'random': l distinct indices uniformly at random;
- 'kmeans++': greedy k-means++ seeding on E (tnx.kmeans, the shared k-means), i.e. samples
  spread out in proportion to their squared distance from the landmarks already chosen;
- 'farthest': farthest-point traversal (Gonzalez), a random first landmark then repeatedly the
  sample farthest from all landmarks so far.

Every method returns l distinct indices, sorted. Dimension letters: N pool, E embedding width.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from tnx import kmeans as kmeans_lib
from tnx import validation

METHODS = ("random", "kmeans++", "farthest")


def check_num_landmarks(num: int, n: int) -> int:
  """num as int if 1 <= num <= n, else ValueError naming num_landmarks."""
  num = validation.positive_int("num_landmarks", num)
  if num > n:
    raise ValueError(f"num_landmarks={num} exceeds the {n} samples of the pool (expected "
                     "1 <= num_landmarks <= pool size)")
  return num


def random_landmarks(key: jax.Array, n: int, num: int) -> jax.Array:
  """`num` distinct indices of range(n), uniformly at random, sorted."""
  num = check_num_landmarks(num, n)
  return jnp.sort(jax.random.choice(key, n, (num,), replace=False))


@functools.partial(jax.jit, static_argnames="num")
def _farthest(key, e_NxE, num):
  n = e_NxE.shape[0]
  first = jax.random.randint(key, (), 0, n).astype(jnp.int32)
  d2_N = kmeans_lib.sq_distances(e_NxE, e_NxE[first][None])[:, 0]
  idx = jnp.zeros((num,), jnp.int32).at[0].set(first)
  taken = jnp.zeros((n,), bool).at[first].set(True)

  def step(i, carry):
    idx, d2_N, taken = carry
    nxt = jnp.argmax(jnp.where(taken, -1.0, d2_N)).astype(jnp.int32)
    d2_N = jnp.minimum(d2_N, kmeans_lib.sq_distances(e_NxE, e_NxE[nxt][None])[:, 0])
    return idx.at[i].set(nxt), d2_N, taken.at[nxt].set(True)

  idx, _, _ = jax.lax.fori_loop(1, num, step, (idx, d2_N, taken))
  return jnp.sort(idx)


def farthest_point_landmarks(key: jax.Array, e_NxE: jax.Array, num: int) -> jax.Array:
  """Farthest-point traversal: `num` distinct indices (duplicates of chosen points come last,
  as their distance is 0), sorted."""
  num = check_num_landmarks(num, e_NxE.shape[0])
  return _farthest(key, jnp.asarray(e_NxE), num)


@jax.jit
def _rows_of(centres_KxE, e_NxE):
  """Distinct row indices equal (nearest) to each centre, greedily in centre order."""
  d2_KxN = kmeans_lib.sq_distances(centres_KxE, e_NxE)

  def step(taken, d2_N):
    i = jnp.argmin(jnp.where(taken, jnp.inf, d2_N)).astype(jnp.int32)
    return taken.at[i].set(True), i

  _, idx = jax.lax.scan(step, jnp.zeros((e_NxE.shape[0],), bool), d2_KxN)
  return jnp.sort(idx)


def kmeanspp_landmarks(key: jax.Array, e_NxE: jax.Array, num: int) -> jax.Array:
  """Greedy k-means++ seeding on the embeddings (tnx.kmeans.kmeans_plusplus), returned as the
  `num` distinct indices of the chosen samples, sorted."""
  num = check_num_landmarks(num, e_NxE.shape[0])
  centres = kmeans_lib.kmeans_plusplus(key, e_NxE, num)
  return _rows_of(centres, jnp.asarray(e_NxE, centres.dtype))


def choose_landmarks(method: str, key: jax.Array, n: int, num: int,
                     e_NxE: jax.Array | None = None) -> jax.Array:
  """Dispatch on `method` ('random' needs only n; the others need the embeddings)."""
  validation.one_of("landmarks", method, METHODS)
  if method == "random":
    return random_landmarks(key, n, num)
  if e_NxE is None:
    raise ValueError(f"landmarks={method!r} needs the pool embeddings; pass embeddings")
  if method == "farthest":
    return farthest_point_landmarks(key, e_NxE, num)
  return kmeanspp_landmarks(key, e_NxE, num)
