"""XMAS data selection end to end (Naharas et al., arXiv 2510.01454): `select(...)`.

  proxy checkpoints phi^{t_0..t_T}  ->  per example and checkpoint, the cross-modal attention
  block X_i(phi^t) (summed over layers)  ->  s_i^t = sum of its top-K singular values  ->
  trajectories M [N, T+1]  ->  stability TV_i = sum_j |M[i,j] - M[i,j-1]|  ->  k-means on the
  rows of M (tnx.kmeans; examples without an image form one extra cluster)  ->  balanced,
  stability-first sampling of the budget (tnx.selection.xmas.sample).

Choices where the paper is not specific, as config options: the attention orientation (`mode`:
the model's causal text-to-image attention averaged over heads, or the public code's
non-causal pre-RoPE merged-head recomputation), the trajectory feature (`trajectory`: the
scalar sum of the top K per checkpoint, as in the public code, or the K values themselves,
flattened to [N, (T+1) K]; stability is always the TV of the scalar scores) and the number of
clusters. Differences from the public code: exact SVD instead of randomized rank-K, padding
excluded from blocks and softmax, a non-finite score is an error (the code sets NaN to 0), and
the text-only cluster's quota is capped at its size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tnx import kmeans, validation
from tnx.selection.xmas import sample, spectral, trajectory

TRAJECTORY_FEATURES = ("sum", "values")


@dataclasses.dataclass(frozen=True)
class XMASConfig:
  """Attributes (public-code values in brackets):
    mode: 'text_to_image' or 'reference' attention block [reference].
    top_k: K singular values per checkpoint [5].
    n_image: image tokens per example N_I (columns of the block).
    layers: attention layers summed, None = all [all].
    trajectory: 'sum' (scalar per checkpoint) or 'values' (K per checkpoint) ['sum'].
    num_clusters: k-means clusters C; 0 = max(8, round(N / 200)) [1000 for 665k examples].
    kmeans_iters: Lloyd iterations [100]. kmeans_restarts: k-means++ restarts [1].
    min_cluster_size: clusters smaller than this are never sampled [3: sizes <= 2 dropped].
    within: 'stable' (lowest TV first), 'unstable' or 'random' inside a cluster ['stable'].
    text_only_cluster: examples without image tokens form one extra cluster, sampled at
      random [True].
    batch_size: pool examples per streamed batch.
  """
  mode: str = "text_to_image"
  top_k: int = 5
  n_image: int = 16
  layers: tuple[int, ...] | None = None
  trajectory: str = "sum"
  num_clusters: int = 0
  kmeans_iters: int = 100
  kmeans_restarts: int = 1
  min_cluster_size: int = 3
  within: str = "stable"
  text_only_cluster: bool = True
  batch_size: int = 64

  def __post_init__(self):
    validation.one_of("trajectory", self.trajectory, TRAJECTORY_FEATURES)
    validation.non_negative_int("num_clusters", self.num_clusters)
    validation.positive_int("kmeans_iters", self.kmeans_iters)
    validation.positive_int("kmeans_restarts", self.kmeans_restarts)
    validation.one_of("within", self.within, sample.WITHIN)
    self.extract()  # validates mode, top_k, n_image, batch_size

  def extract(self) -> trajectory.ExtractConfig:
    return trajectory.ExtractConfig(mode=self.mode, top_k=self.top_k, n_image=self.n_image,
                                    layers=self.layers, batch_size=self.batch_size)


@dataclasses.dataclass(frozen=True)
class Selection:
  """indices: selected pool rows (sorted). values_NxTxK: top singular values per checkpoint.
  trajectories_NxT: scalar scores M. stability_N: TV. labels_N: cluster of every example
  (the text-only cluster, if any, is `num_clusters`). num_clusters: C used by k-means."""
  indices: np.ndarray
  values_NxTxK: np.ndarray
  trajectories_NxT: np.ndarray
  stability_N: np.ndarray
  labels_N: np.ndarray
  num_clusters: int


def default_num_clusters(n: int) -> int:
  return max(8, int(round(n / 200)))


def cluster(key: jax.Array, features_NxF: np.ndarray, has_image_N: np.ndarray,
            cfg: XMASConfig) -> tuple[np.ndarray, int]:
  """k-means labels of the examples with an image (and of all examples when
  `text_only_cluster` is off); the text-only examples get label C. Returns (labels, C)."""
  feats = np.asarray(features_NxF, np.float64)
  n = len(feats)
  image = np.asarray(has_image_N, bool) if cfg.text_only_cluster else np.ones(n, bool)
  rows = np.flatnonzero(image)
  c = cfg.num_clusters or default_num_clusters(len(rows))
  if c > len(rows):
    raise ValueError(f"num_clusters = {c} exceeds the {len(rows)} examples to cluster")
  labels = np.full(n, c, np.int64)
  if len(rows):
    res = kmeans.kmeans(key, jnp.asarray(feats[rows]), c, num_iters=cfg.kmeans_iters,
                        n_init=cfg.kmeans_restarts)
    labels[rows] = np.asarray(res.labels_N)
  return labels, c


def select_from_values(key: jax.Array, values_NxTxK: np.ndarray, has_image_N: np.ndarray,
                       budget: float | int, cfg: XMASConfig) -> Selection:
  """Clustering and sampling from precomputed singular values [N, T+1, K] (for ablations:
  slice checkpoints or change `within` without re-extracting)."""
  v = np.asarray(values_NxTxK, np.float64)
  if v.ndim != 3 or v.shape[2] < cfg.top_k:
    raise ValueError(f"values_NxTxK must be [N, T+1, K >= top_k={cfg.top_k}], got shape "
                     f"{list(v.shape)}")
  v = v[:, :, : cfg.top_k]
  n = len(v)
  target = sample.budget_count(budget, n)   # validates before any clustering
  m = v.sum(axis=2)
  tv = spectral.stability(m)
  feats = m if cfg.trajectory == "sum" else v.reshape(n, -1)
  key_cluster, key_sample = jax.random.split(key)
  labels, c = cluster(key_cluster, feats, has_image_N, cfg)
  random_clusters = (c,) if cfg.text_only_cluster else ()
  idx = sample.balanced_sample(key_sample, labels, tv, target, within=cfg.within,
                               min_cluster_size=cfg.min_cluster_size,
                               random_clusters=random_clusters)
  return Selection(idx, v, m, tv, labels, c)


def select(key: jax.Array, graphdef: Any, checkpoints: Sequence[Sequence[Any]],
           pool: Mapping[str, np.ndarray], budget: float | int, config: XMASConfig = XMASConfig(),
           *, apply_fn: trajectory.ApplyFn = trajectory.default_apply, sharding: Any = None,
           mesh: Any = None) -> Selection:
  """Selects `budget` examples of `pool` with XMAS.

  Args:
    key: PRNG key (k-means seeding and the random draws; the result is a function of it).
    graphdef: nnx GraphDef of the proxy; its attention layers must have `sow_attention`.
    checkpoints: T+1 proxy checkpoints in training order, each the tuple of states merged with
      `graphdef` (e.g. (params, rest) from tnx.selection.xmas.finetune.load_checkpoints).
    pool: arrays with leading N: the model inputs `apply_fn` reads ('tokens', 'image' by
      default) and 'text_mask', 'image_mask', 'token_mask' [N, L] bool.
    budget: count in [1, N] or fraction in (0, 1].
    config: XMASConfig.
    apply_fn: (model, batch) -> anything; runs the forward pass.
    sharding: batch sharding; or
    mesh: a tnx.sharding mesh: batches are sharded over its `data` axis.
  """
  n = trajectory.check_pool(pool, config.n_image)
  sample.budget_count(budget, n)
  trajectory.check_checkpoints(checkpoints)
  values = trajectory.trajectory_values(graphdef, checkpoints, pool, config.extract(),
                                        apply_fn=apply_fn, sharding=sharding, mesh=mesh)
  has_image = np.any(np.asarray(pool["image_mask"]), axis=1)
  return select_from_values(key, values, has_image, budget, config)
