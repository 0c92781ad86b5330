"""Closed forms: the overthinking table, the scaling law and its limits, bad arguments."""

import math

import numpy as np
import pytest

from tnx.icl import task, theory

LAM = np.diag([3.0, 1.0, 0.5, 0.2, 0.1])

# d = 20, lambda_j ~ 1/j with tr = 20, Sigma = I, m = infinity: n -> (#diverging, k*, e_1,
# e_5, e_10, e_40), the reference table of the reproduction plan (independently computed).
E2_TABLE = {60: (0, 40, 3.79, 0.20, 0.03, 0.0), 100: (2, 5, 8.07, 4.65, 6.62, 481.9),
            150: (5, 1, 12.82, 68.9, 1566, 1.6e12), 200: (7, 1, 16.42, 278.9, 2.6e4, 1.3e17)}


@pytest.mark.parametrize("n", sorted(E2_TABLE))
def test_overthinking_table(n):
  lam = np.diag(task.power_law_spectrum(20, 1.0, trace=20))
  pre = theory.optimum_preconditioner(lam, n)
  div, k_star, *values = E2_TABLE[n]
  assert theory.diverging_directions(pre, np.eye(20)) == div
  best = theory.best_k(pre, np.eye(20), 40)
  assert best.k_star == k_star
  assert best.overthinks == (div > 0 and k_star < 40)
  got = best.curve[[0, 4, 9, 39]]
  for g, v in zip(got, values):
    # the table prints 2 decimals or 2-4 significant digits
    assert abs(g - v) <= max(0.006, 0.06 * abs(v)), (n, got, values)


def test_commuting_factors_and_divergence_condition():
  lam = np.diag(task.power_law_spectrum(6, 1.0, trace=6))
  n = 150
  g = np.diag(theory.gamma(lam, n))
  sig = np.eye(6)
  phi = np.sort(theory.contraction_factors(theory.optimum_preconditioner(lam, n), sig))
  np.testing.assert_allclose(phi, np.sort(1 - 1 / g), atol=1e-12)
  assert theory.diverging_directions(np.diag(1 / g), sig) == int(np.sum(1 > 2 * g))
  # in distribution the factors are rho_j in (0, 1): no overthinking
  rho = theory.in_distribution_factors(lam, n)
  np.testing.assert_allclose(np.sort(rho), np.sort(theory.contraction_factors(
      theory.optimum_preconditioner(lam, n), lam)), atol=1e-12)
  assert np.all((rho > 0) & (rho < 1))


def test_cor35_bound_and_isotropic_equality():
  pre = theory.optimum_preconditioner(LAM, 10)
  h = theory.hardness(LAM)
  assert h == pytest.approx(48.0)
  curve = theory.error_curve_inf(pre, LAM, 5)
  bounds = np.array([theory.cor35_bound(5, 10, h, k) for k in range(1, 6)])
  assert np.all(curve <= bounds)
  np.testing.assert_allclose(bounds[[0, 1, 4]], [3.45, 2.38, 0.78], atol=6e-3)
  assert theory.error_1_finite(pre, LAM, 15) <= theory.thm33_bound(5, 10, h, 15)
  np.testing.assert_allclose(theory.thm33_bound(5, 10, h, 15), 136.383, atol=1e-3)
  d, n = 8, 12
  iso = theory.error_curve_inf(theory.optimum_preconditioner(np.eye(d), n), np.eye(d), 6)
  np.testing.assert_allclose(iso, [d * ((d + 1) / (n + d + 1)) ** (2 * k) for k in range(1, 7)],
                             rtol=1e-12)
  np.testing.assert_allclose(iso, [theory.cor35_bound(d, n, d, k) for k in range(1, 7)],
                             rtol=1e-12)


def test_limits():
  assert theory.error_k_inf(theory.optimum_preconditioner(LAM, math.inf), LAM, 1) < 1e-24
  errs = [theory.error_k_inf(theory.optimum_preconditioner(LAM, n), LAM, 1)
          for n in (10, 100, 1000, 10000)]
  assert all(a > b for a, b in zip(errs, errs[1:])) and errs[-1] < 1e-4
  pre = theory.optimum_preconditioner(LAM, 10)
  assert theory.error_k_inf(pre, LAM, 0) == 5.0
  assert theory.error_k_inf(pre, LAM, 400) < 1e-10     # k -> infinity in distribution
  # rescaling Lambda changes neither the hardness nor the bound
  assert theory.hardness(7 * LAM) == pytest.approx(theory.hardness(LAM))
  # the iso-error step count: harder tasks need more steps; the bound is met exactly there
  ks = [theory.steps_for_error(0.01, 5, 10, h) for h in (5, 20, 80)]
  assert ks[0] < ks[1] < ks[2]
  for h in (5, 20, 80):
    k = theory.steps_for_error(0.01, 5, 10, h)
    assert theory.cor35_bound(5, 10, h, k) <= 0.01 < theory.cor35_bound(5, 10, h, k - 1)


def test_multitask_preconditioner_reduces_to_single_task():
  lams = np.stack([LAM, np.diag([0.1, 0.2, 0.5, 1.0, 3.0])])
  np.testing.assert_allclose(theory.mixture_preconditioner(lams, [1.0, 0.0], 9),
                             theory.optimum_preconditioner(LAM, 9), atol=1e-12)
  mixed = theory.mixture_preconditioner(lams, [0.5, 0.5], math.inf)
  avg = lams.mean(0)
  np.testing.assert_allclose(mixed, avg @ np.linalg.inv((lams @ lams).mean(0)), atol=1e-12)


def test_argument_errors():
  pre = theory.optimum_preconditioner(LAM, 10)
  with pytest.raises(ValueError, match="k must be a non-negative integer"):
    theory.error_k_inf(pre, LAM, -1)
  with pytest.raises(ValueError, match="k must be a non-negative integer"):
    theory.cor35_bound(5, 10, 3.0, -2)
  with pytest.raises(ValueError, match="n must be a positive integer"):
    theory.cor35_bound(5, 0, 3.0, 1)
  with pytest.raises(ValueError, match="m must be a positive integer"):
    theory.error_1_finite(pre, LAM, 0)
  with pytest.raises(ValueError, match=r"p must be \[5, 5\] to match sig"):
    theory.error_curve_inf(np.eye(4), LAM, 3)
  with pytest.raises(ValueError, match="sig must be positive definite"):
    theory.error_curve_inf(pre, np.diag([1.0, 1, 1, 1, 0]), 3)
  with pytest.raises(ValueError, match="sig must be symmetric"):
    theory.best_k(pre, LAM + np.triu(np.ones((5, 5)), 1), 3)
  with pytest.raises(ValueError, match="lam must be positive definite"):
    theory.hardness(np.diag([1.0, 0.0]))
  with pytest.raises(ValueError, match=r"lams\[1\] must be positive semi-definite"):
    theory.mixture_preconditioner(np.stack([LAM, -LAM]), [0.5, 0.5], 10)
