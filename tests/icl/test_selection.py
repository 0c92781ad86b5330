"""The task-selection program: both solvers agree, are feasible and meet KKT, match brute
force, and put all mass on a family equal to the target."""

import itertools

import numpy as np
import pytest

from tnx.icl import selection, task


def _random_spd(rng, d):
  a = rng.standard_normal((d, d))
  return a @ a.T / d + 0.1 * np.eye(d)


def _families(d=100):
  return np.stack([np.diag(task.power_law_spectrum(d, a, support=b))
                   for a, b in ((0.2, 20), (0.8, 20), (0.2, 100), (0.8, 100))])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_solvers_agree_and_meet_kkt(seed):
  rng = np.random.default_rng(seed)
  d = 6
  sig = _random_spd(rng, d)
  lams = np.stack([_random_spd(rng, d) for _ in range(3)])
  r = selection.select(sig, lams)
  assert r.kkt.simplex_violation < 1e-12
  assert r.kkt.pg_residual < 1e-8
  assert r.kkt.stationarity < 1e-7 and r.kkt.dual_violation < 1e-8
  assert r.max_disagreement < 1e-6
  # brute force over a simplex grid never beats the solver
  prob = selection.problem(sig, lams)
  grid = [np.array([i, j, 200 - i - j]) / 200
          for i, j in itertools.product(range(201), range(201)) if i + j <= 200]
  assert min(selection.objective(p, prob) for p in grid) >= r.objective - 1e-10


def test_all_mass_on_the_matching_family():
  fams = _families()
  for ell in (2, 3):        # the full-support families are valid (positive definite) targets
    r = selection.select(fams[ell], fams)
    np.testing.assert_allclose(r.pi, np.eye(4)[ell], atol=1e-7)
    assert abs(r.objective) < 1e-10
    assert r.kkt.pg_residual < 1e-8


def test_target_dependence_of_the_selection():
  """Sigma = I selects Easy-Long only; a long-tailed target mixes mostly long/hard tasks."""
  fams = _families()
  np.testing.assert_allclose(selection.select(np.eye(100), fams).pi, [0, 0, 1, 0], atol=1e-7)
  r = selection.select(np.diag(np.arange(1, 101) ** -0.5), fams)
  np.testing.assert_allclose(r.pi, [0.076, 0.0, 0.232, 0.692], atol=2e-3)
  assert r.pi[1] + r.pi[3] >= 0.5


def test_argument_errors():
  with pytest.raises(ValueError, match=r"lams\[0\] must be \[3, 3\]"):
    selection.problem(np.eye(3), np.stack([np.eye(2)]))
  with pytest.raises(ValueError, match="sig must be positive definite"):
    selection.problem(np.diag([1.0, 0.0]), np.stack([np.eye(2)]))
  with pytest.raises(ValueError, match="lams must be"):
    selection.problem(np.eye(2), np.eye(2))
