"""Landmark choice: distinct sorted indices, farthest-point traversal vs a NumPy loop, k-means++
seeding mapped back to the seeded samples, and the landmarks > samples error; round-robin
over targets: k distinct picks, balanced per target, top-k for one target, vs a plain loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tnx import kmeans
from tnx.selection.influence import landmarks, targets

E = jnp.asarray(np.random.default_rng(0).standard_normal((30, 3)))


def test_random_landmarks_distinct_sorted():
  idx = np.asarray(landmarks.random_landmarks(jax.random.key(0), 30, 12))
  assert idx.size == 12 and np.all(np.diff(idx) > 0) and idx.max() < 30


def test_farthest_point_matches_a_numpy_traversal():
  key = jax.random.key(1)
  idx = np.asarray(landmarks.farthest_point_landmarks(key, E, 6))
  first = int(jax.random.randint(key, (), 0, 30))
  e = np.asarray(E)
  chosen = [first]
  d = ((e - e[first]) ** 2).sum(-1)
  for _ in range(5):
    d_masked = d.copy()
    d_masked[chosen] = -1
    nxt = int(np.argmax(d_masked))
    chosen.append(nxt)
    d = np.minimum(d, ((e - e[nxt]) ** 2).sum(-1))
  assert list(idx) == sorted(chosen)


def test_kmeanspp_returns_the_seeded_samples():
  key = jax.random.key(2)
  idx = np.asarray(landmarks.kmeanspp_landmarks(key, E, 5))
  centres = np.asarray(kmeans.kmeans_plusplus(key, E, 5))
  assert np.all(np.diff(idx) > 0)
  np.testing.assert_allclose(np.sort(np.asarray(E)[idx], axis=0), np.sort(centres, axis=0))
  dup = jnp.concatenate([E[:4]] * 7 + [E[:2]])  # 4 distinct points, 30 rows: still 5
  assert len(set(np.asarray(landmarks.kmeanspp_landmarks(key, dup, 5)).tolist())) == 5


def test_landmark_errors():
  for method in ("random", "kmeans++", "farthest"):
    with pytest.raises(ValueError, match="num_landmarks=31 exceeds the 30 samples"):
      landmarks.choose_landmarks(method, jax.random.key(0), 30, 31, E)
  with pytest.raises(ValueError, match="num_landmarks must be a positive integer"):
    landmarks.choose_landmarks("random", jax.random.key(0), 30, 0)
  with pytest.raises(ValueError, match="needs the pool embeddings"):
    landmarks.choose_landmarks("farthest", jax.random.key(0), 30, 3)
  with pytest.raises(ValueError, match="landmarks must be one of"):
    landmarks.choose_landmarks("grid", jax.random.key(0), 30, 3, E)


def _loop_round_robin(s, k, order):
  chosen = []
  t = 0
  while len(chosen) < k:
    j = order[t % s.shape[1]]
    best = [i for i in np.argsort(-s[:, j], kind="stable") if i not in chosen][0]
    chosen.append(int(best))
    t += 1
  return chosen


def test_round_robin_k_distinct_balanced_and_reference():
  s = np.random.default_rng(3).standard_normal((40, 3))
  key = jax.random.key(4)
  picks = targets.round_robin(jnp.asarray(s), 10, key)
  order = np.asarray(jax.random.permutation(key, 3))
  assert list(picks) == _loop_round_robin(s, 10, order)
  assert len(set(picks.tolist())) == 10
  counts = [sum(1 for t, _ in enumerate(picks) if order[t % 3] == j) for j in range(3)]
  assert sorted(counts) == [3, 3, 4]
  one = targets.round_robin(jnp.asarray(s[:, :1]), 7, key)
  assert list(one) == list(np.argsort(-s[:, 0])[:7])
  # Targets that all like the same samples: the later ones skip what is taken.
  same = np.repeat(s[:, :1], 4, axis=1)
  assert sorted(targets.round_robin(jnp.asarray(same), 9, key)) == sorted(
      np.argsort(-s[:, 0])[:9])
  with pytest.raises(ValueError, match="k must be an integer with 1 <= k <= 40"):
    targets.round_robin(jnp.asarray(s), 41, key)
