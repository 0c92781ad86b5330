"""XMAS spectral scores and stability: invariances, Lipschitz bounds, total variation."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tnx.selection.xmas import spectral


def _mat(seed, shape=(7, 5)):
  return np.random.default_rng(seed).normal(size=shape)


def test_topk_sum_invariances():
  x = _mat(0)
  s = float(spectral.topk_singular_sum(x, 3))
  np.testing.assert_allclose(float(spectral.topk_singular_sum(x.T, 3)), s, rtol=1e-12)
  rng = np.random.default_rng(1)
  perm = x[rng.permutation(7)][:, rng.permutation(5)]
  np.testing.assert_allclose(float(spectral.topk_singular_sum(perm, 3)), s, rtol=1e-12)
  padded = np.concatenate([x, np.zeros((4, 5))])
  np.testing.assert_allclose(float(spectral.topk_singular_sum(padded, 3)), s, rtol=1e-12)
  np.testing.assert_allclose(float(spectral.topk_singular_sum(x, 5)),
                             np.linalg.norm(x, "nuc"), rtol=1e-12)          # K >= rank
  np.testing.assert_allclose(np.asarray(spectral.top_singular_values(x, 5)),
                             np.linalg.svd(x, compute_uv=False), rtol=1e-12)
  with pytest.raises(ValueError, match="top_k"):
    spectral.top_singular_values(x, 6)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 4), st.floats(1e-3, 2.0))
def test_lipschitz_bounds(seed, k, scale):
  x = _mat(seed, (6, 4))
  y = x + scale * _mat(seed + 1, (6, 4))
  sx, sy = (np.asarray(spectral.top_singular_values(m, 4)) for m in (x, y))
  # Weyl: every singular value moves by at most the spectral norm of the difference.
  assert np.all(np.abs(sx - sy) <= np.linalg.norm(x - y, 2) * (1 + 1e-10) + 1e-12)
  # Ky Fan K-norm: |s(X) - s(Y)| <= sqrt(K) ||X - Y||_F.
  gap = abs(sx[:k].sum() - sy[:k].sum())
  assert gap <= np.sqrt(k) * np.linalg.norm(x - y) * (1 + 1e-10) + 1e-12


def test_stability_total_variation():
  m = np.array([[1.0, 1.0, 1.0], [0.0, 2.0, 1.0], [3.0, 5.0, 5.0]])
  np.testing.assert_allclose(spectral.stability(m), [0.0, 3.0, 2.0])
  np.testing.assert_allclose(spectral.stability(m + 7.5), spectral.stability(m))
  np.testing.assert_allclose(spectral.stability(np.array([[0.2, -0.5]])), [0.7])
  np.testing.assert_array_equal(spectral.stability(np.ones((4, 1))), 0.0)
  with pytest.raises(ValueError, match="trajectories"):
    spectral.stability(np.ones(3))
