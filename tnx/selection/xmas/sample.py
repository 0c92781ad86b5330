"""Balanced, stability-first sampling over clusters (arXiv 2510.01454, section 4).

    n_remaining <- budget
    clusters with more than `min_cluster_size - 1` members, by size ascending (ties: cluster id)
    for the j-th of the m eligible clusters:
        quota <- floor(n_remaining / (m - j))
        take min(quota, size) members: random ones in a `random_clusters` cluster (text-only
        examples), else by the `within` rule: 'stable' = smallest TV first (ties: lower index),
        'unstable' = largest TV first, 'random' = uniformly at random
        n_remaining <- n_remaining - taken        (an under-filled cluster passes its surplus on)

Visiting clusters smallest first makes the result exact: whenever the budget is at most the
number of eligible examples, exactly `budget` examples are returned (if the j-th cluster fills
less than its quota, every later cluster is larger than that quota, and the floor leaves at
most m - j - 1 examples behind, which the later clusters can absorb). The public code draws the
text-only cluster with a sampler that fails when its quota exceeds its size; here it is capped
and carries its surplus like any other cluster. Random draws use one generator per cluster seeded
from `fold_in(key, cluster id)`, so the result is a deterministic function of the key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np

from tnx import validation

WITHIN = ("stable", "unstable", "random")


def budget_count(budget: float | int, n: int) -> int:
  """A budget as a number of examples: an int in [1, n] as is, a float fraction in (0, 1] as
  floor(fraction * n) (at least 1)."""
  if isinstance(budget, bool):
    raise ValueError(f"budget must be a count in [1, {n}] or a fraction in (0, 1], got {budget}")
  if isinstance(budget, (int, np.integer)):
    if not 1 <= budget <= n:
      raise ValueError(f"budget must be a count in [1, {n}] (the pool size) or a fraction in "
                       f"(0, 1], got {budget}")
    return int(budget)
  b = float(budget)
  if not (math.isfinite(b) and 0 < b <= 1):
    raise ValueError(f"budget must be a count in [1, {n}] or a fraction in (0, 1], got "
                     f"{budget!r}")
  return max(1, int(math.floor(b * n)))


def cluster_rng(key: jax.Array, cluster_id: int) -> np.random.Generator:
  """Host generator of one cluster's draws, seeded from `fold_in(key, cluster_id)` (numpy:
  no compilation per cluster size)."""
  data = np.asarray(jax.random.key_data(jax.random.fold_in(key, cluster_id)))
  return np.random.default_rng(data.ravel().tolist())


def balanced_sample(key: jax.Array, labels_N: np.ndarray, stability_N: np.ndarray | None,
                    budget: float | int, *, within: str = "stable", min_cluster_size: int = 3,
                    random_clusters: Sequence[int] = ()) -> np.ndarray:
  """Sorted indices of the selected examples (see the module docstring).

  Args:
    key: PRNG key for the random draws.
    labels_N: cluster id (non-negative int) of every example.
    stability_N: TV of every example (lower = more stable); may be None with within='random'.
    budget: count in [1, N] or fraction in (0, 1].
    within: 'stable', 'unstable' or 'random' order inside a cluster.
    min_cluster_size: clusters with fewer members are never sampled (3 = drop sizes <= 2).
    random_clusters: cluster ids drawn at random whatever `within` (the text-only cluster).
  Raises:
    ValueError: bad arguments, or a budget above the number of eligible examples.
  """
  labels = np.asarray(labels_N)
  if labels.ndim != 1 or len(labels) == 0 or not np.issubdtype(labels.dtype, np.integer) or \
      labels.min() < 0:
    raise ValueError(f"labels_N must be a non-empty 1-D array of non-negative ints, got "
                     f"shape {list(labels.shape)} dtype {labels.dtype}")
  n = len(labels)
  validation.one_of("within", within, WITHIN)
  min_size = validation.positive_int("min_cluster_size", min_cluster_size)
  if stability_N is None:
    if within != "random":
      raise ValueError(f"stability_N is needed for within={within!r}")
    tv = np.zeros(n)
  else:
    tv = np.asarray(stability_N, np.float64)
    validation.shape("stability_N", tv, (n,))
    if not np.all(np.isfinite(tv)):
      raise ValueError("stability_N must be finite")
  target = budget_count(budget, n)
  ids, sizes = np.unique(labels, return_counts=True)
  keep = sizes >= min_size
  ids, sizes = ids[keep], sizes[keep]
  eligible = int(sizes.sum())
  if target > eligible:
    raise ValueError(f"budget = {budget} ({target} examples) exceeds the {eligible} examples "
                     f"in clusters of at least min_cluster_size = {min_size} members")
  order = np.lexsort((ids, sizes))             # size ascending, then cluster id
  random_set = {int(c) for c in random_clusters}
  chosen, remaining = [], target
  for j, c in enumerate(ids[order]):
    members = np.flatnonzero(labels == c)
    quota = remaining // (len(order) - j)
    take = min(quota, len(members))
    if take == 0:
      continue
    if within == "random" or int(c) in random_set:
      picked = members[cluster_rng(key, int(c)).permutation(len(members))[:take]]
    else:
      score = tv[members] if within == "stable" else -tv[members]
      picked = members[np.lexsort((members, score))[:take]]
    chosen.append(picked)
    remaining -= take
  return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def cluster_shares(labels_N: np.ndarray, selected: np.ndarray) -> dict[int, int]:
  """{cluster id: number of selected members} (clusters with none selected included)."""
  labels = np.asarray(labels_N)
  counts = np.bincount(labels[np.asarray(selected, np.int64)], minlength=labels.max() + 1)
  return {int(c): int(counts[c]) for c in np.unique(labels)}
