"""Baselines of the XMAS demonstration (arXiv 2510.01454, section 6 compares against these
families of methods):

* `random_subset`: uniform without replacement.
* `family_balanced`: the budget spread evenly over task families with the balanced sampler
  (random inside a family) - an oracle that knows the family labels (upper reference).
* EL2N-like loss score (Paul et al. 2021): ||softmax(logits) - onehot(answer)||_2 at the
  answer token under a proxy checkpoint; the highest scores are kept.
* COINCIDE-like embedding clusters: k-means (tnx.kmeans) on the proxy's final-layer hidden
  states mean-pooled over the non-padding tokens, then the balanced sampler with random
  choice inside clusters. (COINCIDE additionally weights clusters by transferability and
  density; that part is not reproduced.)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tnx import kmeans
from tnx.selection.xmas import sample, trajectory


def random_subset(key: jax.Array, n: int, budget: float | int) -> np.ndarray:
  """Sorted indices of a uniform random subset of size `budget` of range(n)."""
  k = sample.budget_count(budget, n)
  return np.sort(np.asarray(jax.random.permutation(key, n))[:k])


def family_balanced(key: jax.Array, family_N: np.ndarray, budget: float | int) -> np.ndarray:
  """The budget spread evenly over families (small families taken whole), random inside."""
  return sample.balanced_sample(key, np.asarray(family_N), None, budget, within="random",
                                min_cluster_size=1)


def top_scores(score_N: np.ndarray, budget: float | int) -> np.ndarray:
  """Sorted indices of the `budget` highest scores (ties: lower index first)."""
  s = np.asarray(score_N, np.float64)
  k = sample.budget_count(budget, len(s))
  return np.sort(np.lexsort((np.arange(len(s)), -s))[:k])


@functools.lru_cache(maxsize=8)
def _outputs_fn(graphdef: Any):
  @jax.jit
  def run(states, batch):
    model = nnx.merge(graphdef, *states)
    inputs = {"tokens": batch["tokens"], "image": batch["image"]}
    hidden_BxLxD = model.hidden(inputs)
    logits_BxLxV = model(inputs)
    w_BxL = batch["weights"] > 0
    probs = jax.nn.softmax(logits_BxLxV.astype(jnp.float32), axis=-1)
    onehot = jax.nn.one_hot(batch["targets"], probs.shape[-1], dtype=probs.dtype)
    err_BxL = jnp.linalg.norm(probs - onehot, axis=-1)
    el2n_B = jnp.sum(jnp.where(w_BxL, err_BxL, 0.0), axis=1) / jnp.maximum(
        jnp.sum(w_BxL, axis=1), 1)
    tok = batch["token_mask"]
    pooled_BxD = jnp.sum(jnp.where(tok[..., None], hidden_BxLxD, 0.0), axis=1) / jnp.maximum(
        jnp.sum(tok, axis=1, keepdims=True), 1)
    return el2n_B, pooled_BxD
  return run


def proxy_outputs(graphdef: Any, states: Sequence[Any], pool: Mapping[str, np.ndarray], *,
                  batch_size: int = 64, sharding: Any = None) -> tuple[np.ndarray, np.ndarray]:
  """(EL2N score [N], mean-pooled final hidden state [N, D]) under one checkpoint."""
  fn = _outputs_fn(graphdef)
  keys = ("tokens", "image", "targets", "weights", "token_mask")
  scores, pooled = [], []
  for batch, real in trajectory.pool_batches(pool, batch_size, keys):
    if sharding is not None:
      batch = jax.device_put(batch, sharding)
    s, h = fn(tuple(states), batch)
    scores.append(np.asarray(s)[:real])
    pooled.append(np.asarray(h)[:real])
  return np.concatenate(scores), np.concatenate(pooled)


def embedding_clusters(key: jax.Array, embeddings_NxD: np.ndarray, budget: float | int,
                       num_clusters: int, *, num_iters: int = 100,
                       min_cluster_size: int = 3) -> tuple[np.ndarray, np.ndarray]:
  """(selected indices, cluster labels): k-means on the embeddings, then the balanced
  sampler with random choice inside each cluster."""
  key_km, key_s = jax.random.split(key)
  res = kmeans.kmeans(key_km, jnp.asarray(embeddings_NxD, jnp.float32), num_clusters,
                      num_iters=num_iters)
  labels = np.asarray(res.labels_N)
  return sample.balanced_sample(key_s, labels, None, budget, within="random",
                                min_cluster_size=min_cluster_size), labels
