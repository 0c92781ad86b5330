"""XMAS balanced stability-first sampling: exact budget, quotas and carry-over, small-cluster
and text-only rules, within-cluster orders, determinism, bad input."""

import jax
import numpy as np
import pytest

from tnx.selection.xmas import sample


def _labels(sizes):
  return np.repeat(np.arange(len(sizes)), sizes)


def test_hand_built_carry_over():
  labels = _labels([3, 5, 100])
  tv = np.random.default_rng(0).random(len(labels))
  idx = sample.balanced_sample(jax.random.key(0), labels, tv, 30)
  assert sample.cluster_shares(labels, idx) == {0: 3, 1: 5, 2: 22}


def _quota_reference(sizes, budget, min_size=3):
  """Per-cluster counts by the rule, written independently of the implementation."""
  left, out = budget, {}
  eligible = sorted((s, c) for c, s in enumerate(sizes) if s >= min_size)
  for j, (s, c) in enumerate(eligible):
    q = left // (len(eligible) - j)
    out[c] = min(q, s)
    left -= out[c]
  return out


@pytest.mark.parametrize("seed", range(6))
def test_exact_budget_and_shares(seed):
  rng = np.random.default_rng(seed)
  sizes = rng.integers(1, 40, size=int(rng.integers(3, 12)))
  labels = rng.permutation(_labels(sizes))
  tv = rng.random(len(labels))
  eligible = int(sizes[sizes >= 3].sum())
  for budget in sorted({1, eligible // 3, eligible // 2, eligible}):
    if budget < 1:
      continue
    idx = sample.balanced_sample(jax.random.key(seed), labels, tv, budget)
    assert len(idx) == budget and len(set(idx.tolist())) == budget
    shares = sample.cluster_shares(labels, idx)
    want = _quota_reference(list(sizes), budget)
    for c, s in enumerate(sizes):
      assert shares[c] == want.get(c, 0)
      if s <= 2:
        assert shares[c] == 0                       # tiny clusters never sampled


def test_within_cluster_orders_and_text_only_random():
  labels = _labels([6, 6, 6])
  tv = np.array([5, 1, 4, 2, 3, 0, 9, 8, 7, 6, 5, 4, 0, 1, 2, 3, 4, 5], float)
  key = jax.random.key(3)
  stable = sample.balanced_sample(key, labels, tv, 6)
  np.testing.assert_array_equal(stable, [1, 5, 10, 11, 12, 13])     # two lowest TV each
  unstable = sample.balanced_sample(key, labels, tv, 6, within="unstable")
  np.testing.assert_array_equal(unstable, [0, 2, 6, 7, 16, 17])
  # Cluster 2 as the text-only cluster: random members, not its two most stable.
  draws = {tuple(sample.balanced_sample(jax.random.key(s), labels, tv, 6,
                                        random_clusters=(2,))[4:]) for s in range(8)}
  assert len(draws) > 1
  a = sample.balanced_sample(key, labels, tv, 6, within="random")
  b = sample.balanced_sample(key, labels, tv, 6, within="random")
  np.testing.assert_array_equal(a, b)                                 # deterministic


def test_text_only_quota_capped_and_carried():
  labels = _labels([4, 50, 50])                    # cluster 0 is text-only
  tv = np.zeros(len(labels))
  idx = sample.balanced_sample(jax.random.key(0), labels, tv, 60, random_clusters=(0,))
  assert len(idx) == 60
  assert sample.cluster_shares(labels, idx) == {0: 4, 1: 28, 2: 28}


def test_budget_forms_and_errors():
  labels = _labels([5, 5])
  tv = np.zeros(10)
  assert len(sample.balanced_sample(jax.random.key(0), labels, tv, 0.5)) == 5
  for bad in (0, 11, -0.1, 0.0, 1.5, float("nan"), True):
    with pytest.raises(ValueError, match="budget"):
      sample.balanced_sample(jax.random.key(0), labels, tv, bad)
  with pytest.raises(ValueError, match="budget"):             # above the eligible examples
    sample.balanced_sample(jax.random.key(0), _labels([2, 5]), np.zeros(7), 6)
  with pytest.raises(ValueError, match="within"):
    sample.balanced_sample(jax.random.key(0), labels, tv, 2, within="best")
  with pytest.raises(ValueError, match="stability_N"):
    sample.balanced_sample(jax.random.key(0), labels, np.zeros(3), 2)
  with pytest.raises(ValueError, match="labels_N"):
    sample.balanced_sample(jax.random.key(0), -labels, tv, 2)
