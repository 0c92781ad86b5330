"""Noise scales, sensitivities and neighbouring-dataset checks of every mechanism.

Statistical tests use fixed seeds; each states its false-failure rate for a correct
implementation under a fresh seed (the fixed seed makes the outcome deterministic).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from tnx.privacy import clustering, gmm

# Two-sided chi-square variance test at this level per call: false-failure rate 1e-6.
ALPHA = 1e-6


def _assert_variance(samples: np.ndarray, sigma: float):
  x = np.asarray(samples, np.float64).ravel()
  n = x.size
  stat = np.sum(x ** 2) / sigma ** 2            # mean is known to be 0: chi2 with n dof
  lo, hi = stats.chi2.ppf(ALPHA / 2, n), stats.chi2.ppf(1 - ALPHA / 2, n)
  assert lo < stat < hi, f"variance {np.mean(x ** 2):.6g} vs expected {sigma ** 2:.6g}"


@pytest.mark.parametrize("cov_type", ["full", "diag", "iso"])
def test_moment_noise_has_calibrated_scale(cov_type):
  m, d = 64, 6
  stds = gmm.moment_stds(2.0, 1.0, cov_type)
  zeros_q = {"full": (m, d, d), "diag": (m, d), "iso": (m,)}[cov_type]
  n, s, q = gmm.add_moment_noise(jax.random.key(0), jnp.zeros(m), jnp.zeros((m, d)),
                                 jnp.zeros(zeros_q), stds, cov_type)
  _assert_variance(n, stds[0])
  _assert_variance(s, stds[1])
  q = np.asarray(q)
  if cov_type == "full":
    np.testing.assert_array_equal(q, np.swapaxes(q, 1, 2))     # symmetric
    iu = np.triu_indices(d)                                     # each entry noised once
    _assert_variance(q[:, iu[0], iu[1]], stds[2])
  else:
    _assert_variance(q, stds[2])


def test_moment_stds_round_trip():
  for cov_type in gmm.COV_TYPES:
    stds = gmm.moment_stds(1.7, 0.8, cov_type, (0.3, 0.3, 0.4))
    assert gmm.noise_multiplier(*stds, 0.8, cov_type) == pytest.approx(1.7, rel=1e-12)


def test_discrete_laplace_matches_scipy_pmf():
  scale = 2.5
  x = clustering.discrete_laplace(np.random.default_rng(0), scale, (200_000,))
  a = 1 / scale
  vals = np.arange(-12, 13)
  observed = np.array([np.sum(x == v) for v in vals] + [np.sum(np.abs(x) > 12)])
  p = stats.dlaplace.pmf(vals, a)
  expected = len(x) * np.append(p, 1 - p.sum())
  # Goodness of fit at level 1e-6 (false-failure rate 1e-6).
  assert stats.chisquare(observed, expected).pvalue > ALPHA
  sd = clustering.discrete_laplace_std(scale)
  assert sd == pytest.approx(stats.dlaplace.std(a), rel=1e-12)
  # Neighbouring counts c and c + 1: the pmf ratio of the released value is <= e^a everywhere
  # (checked on values with enough mass; 5 % slack covers Monte Carlo error).
  h0 = np.array([np.sum(x == v) for v in vals])
  h1 = np.array([np.sum(x + 1 == v) for v in vals])
  ok = (h0 > 2000) & (h1 > 2000)
  assert np.all(np.abs(np.log(h0[ok] / h1[ok])) <= a * 1.05)


def test_lsh_leaf_sum_noise_has_calibrated_scale():
  # Zero data and noise-free counts: the released leaf sums are pure noise of std mult * R.
  n, d, radius, mult = 4000, 5, 0.7, 3.0
  z = jnp.zeros((n, d))
  y = jnp.zeros(n, jnp.int32)
  cs = clustering.LSHCoresetBackend(max_depth=4).coreset(jax.random.key(3), z, y, 1, radius,
                                                         None, mult)
  assert cs.weights_M.sum() == n
  big = [clustering.LSHCoresetBackend(max_depth=4).coreset(jax.random.key(s), z, y, 1, radius,
                                                           None, mult).sums_MxD
         for s in range(40)]
  _assert_variance(np.concatenate(big), mult * radius)


def _scaled_release(z, cell, centres, m, cov_type, stds):
  n, s, q = (np.asarray(a, np.float64) for a in gmm.cell_moments(
      jnp.asarray(z), jnp.asarray(cell), jnp.asarray(centres), m, cov_type))
  if cov_type == "full":
    iu = np.triu_indices(z.shape[1])
    q = q[:, iu[0], iu[1]]
  return np.concatenate([n[:, None] / stds[0], s / stds[1], q.reshape(m, -1) / stds[2]], 1)


@pytest.mark.parametrize("cov_type", ["full", "diag", "iso"])
def test_sensitivity_of_one_record(cov_type):
  rng = np.random.default_rng(1)
  m, d, radius, z_eff = 5, 4, 0.9, 1.3
  stds = gmm.moment_stds(z_eff, radius, cov_type)
  centres = rng.normal(size=(m, d))
  centres = centres * radius / np.linalg.norm(centres, axis=1, keepdims=True)
  centres[0] = radius * np.eye(d)[0]
  worst = 0.0
  for trial in range(30):
    z = rng.normal(size=(40, d))
    z *= radius * rng.uniform(0, 1, (40, 1)) / np.linalg.norm(z, axis=1, keepdims=True)
    if trial == 0:        # an extreme record: norm R on an axis, opposite to its centre
      z[0] = -centres[0]
    cell = rng.integers(0, m, 40)
    cell[0] = 0 if trial == 0 else cell[0]
    full = _scaled_release(z, cell, centres, m, cov_type, stds)
    minus = _scaled_release(z[1:], cell[1:], centres, m, cov_type, stds)
    diff = np.linalg.norm(full - minus, axis=1)
    others = np.delete(diff, cell[0])
    assert np.all(others < 1e-12)                            # other cells untouched
    assert diff[cell[0]] <= 1 / z_eff * (1 + 1e-9)           # within the accounted bound
    worst = max(worst, diff[cell[0]])
  # The bound is attained by the extreme record (so it is not loose either).
  assert worst >= 0.999 / z_eff


def test_release_distribution_shift_bounded_on_neighbours():
  """Empirical check on neighbouring datasets through the actual noisy release.

  The optimal test statistic between D and D' = D minus one record is a projection T of the
  release; its means under D and D' differ by at most 1/z_eff noise stds (mu-GDP with
  mu = 1/z_eff, which is what the accountant charges). Estimated from 4,000 releases each,
  mu_hat has std ~ 0.025; the 0.12 slack gives a false-failure rate below 1e-6.
  """
  m, d, radius, z_eff, cov_type = 3, 3, 1.0, 1.0, "full"
  stds = gmm.moment_stds(z_eff, radius, cov_type)
  rng = np.random.default_rng(2)
  z = rng.normal(size=(20, d))
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  cell = rng.integers(0, m, 20)
  centres = np.zeros((m, d))
  stats_d = gmm.cell_moments(jnp.asarray(z), jnp.asarray(cell), jnp.asarray(centres), m,
                             cov_type)
  stats_n = gmm.cell_moments(jnp.asarray(z[1:]), jnp.asarray(cell[1:]), jnp.asarray(centres),
                             m, cov_type)
  iu = np.triu_indices(d)

  def flat(n, s, q):
    return np.concatenate([np.asarray(n)[..., None] / stds[0], np.asarray(s) / stds[1],
                           np.asarray(q)[..., iu[0], iu[1]] / stds[2]], -1)

  release = jax.jit(jax.vmap(lambda k, st: gmm.add_moment_noise(k, *st, stds, cov_type),
                             in_axes=(0, None)))
  out_d = flat(*release(jax.random.split(jax.random.key(0), 4000), stats_d))
  out_n = flat(*release(jax.random.split(jax.random.key(1), 4000), stats_n))
  mean_gap = flat(*stats_d) - flat(*stats_n)
  direction = mean_gap / np.linalg.norm(mean_gap)
  t_d = np.einsum("rmk,mk->r", out_d, direction)
  t_n = np.einsum("rmk,mk->r", out_n, direction)
  pooled = math.sqrt(0.5 * (t_d.var() + t_n.var()))
  mu_hat = abs(t_d.mean() - t_n.mean()) / pooled
  assert mu_hat <= 1 / z_eff + 0.12
  assert pooled == pytest.approx(1.0, abs=0.05)   # unit noise in the scaled coordinates
