"""Robust weights: simplex projection vs a generic solver, first-order closed form vs the QP
solver, exactly k non-zeros after the L2 search (property test), monotone support, the
Lipschitz bound, the second-order QP vs scipy, and budget errors."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from tnx.selection.influence import weights as W


def _scipy_qp(p, q, eta, lam, total):
  n = p.size
  f = lambda w: -p @ w + 0.5 * eta * w @ q @ w + 0.5 * lam * w @ w
  g = lambda w: -p + eta * q @ w + lam * w
  res = minimize(f, np.full(n, total / n), jac=g, method="SLSQP", bounds=[(0, None)] * n,
                 constraints=[{"type": "eq", "fun": lambda w: w.sum() - total,
                               "jac": lambda w: np.ones(n)}],
                 options={"ftol": 1e-14, "maxiter": 500})
  return res.x


def test_projection_and_closed_form_match_a_generic_solver():
  rng = np.random.default_rng(0)
  p = rng.standard_normal(12)
  for lam in (0.05, 0.5, 5.0):
    w = np.asarray(W.first_order_weights(jnp.asarray(p), lam, 12.0))
    assert w.min() >= 0 and w.sum() == pytest.approx(12.0)
    np.testing.assert_allclose(w, _scipy_qp(p, np.zeros((12, 12)), 0.0, lam, 12.0), atol=1e-6)
    qp = W.qp_weights(jnp.asarray(p), lambda v: 0.0 * v, 0.0, lam, 12.0, lipschitz=lam)
    np.testing.assert_allclose(qp, w, atol=1e-8)
    support = np.flatnonzero(w)
    assert set(support) == set(np.argsort(-p)[:support.size])  # support = top of p


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 40), st.data())
def test_search_gives_exactly_k_nonzeros(n, data):
  seed = data.draw(st.integers(0, 2**31 - 1))
  k = data.draw(st.integers(1, n))
  p = np.random.default_rng(seed).standard_normal(n) * data.draw(st.sampled_from([1e-3, 1, 1e3]))
  idx, w, lam = W.robust_first_order(p, k)
  full = W._project_np(p / lam, float(n))
  assert np.count_nonzero(full) == k and np.count_nonzero(w) == k
  assert sorted(idx) == sorted(np.argsort(-p)[:k])
  assert w.sum() == pytest.approx(n) and w.min() > 0
  lo, hi = W.lambda_interval_for_k(np.sort(p)[::-1][:k + 1], k, float(n))
  assert lo < lam <= hi


def test_support_grows_with_lambda_and_projection_is_lipschitz():
  rng = np.random.default_rng(3)
  p = rng.standard_normal(30)
  lams = np.geomspace(1e-3, 1e2, 40)
  sizes = [np.count_nonzero(W._project_np(p / lam, 30.0)) for lam in lams]
  assert sizes[0] == 1 and sizes[-1] == 30 and np.all(np.diff(sizes) >= 0)
  for lam in (0.1, 1.0):
    p_hat = p + 0.1 * rng.standard_normal(30)
    gap = np.linalg.norm(W._project_np(p_hat / lam, 30.0) - W._project_np(p / lam, 30.0))
    assert gap <= np.linalg.norm(p_hat - p) / lam + 1e-12


def test_second_order_qp_matches_scipy_and_its_search_hits_k():
  rng = np.random.default_rng(4)
  n = 10
  a = rng.standard_normal((n, 4))
  q = a @ a.T / n
  p = rng.standard_normal(n)
  w = W.qp_weights(jnp.asarray(p), lambda v: jnp.asarray(q) @ v, 0.7, 0.3, float(n),
                   steps=20000, tol=1e-13)
  np.testing.assert_allclose(w, _scipy_qp(p, q, 0.7, 0.3, float(n)), atol=1e-5)
  idx, wk, lam = W.robust_qp(jnp.asarray(p), lambda v: jnp.asarray(q) @ v, 0.7, 4)
  assert idx.size == 4 and np.all(wk > 0) and wk.sum() == pytest.approx(n, rel=1e-9)


def test_budget_and_tie_errors():
  p = np.arange(5.0)
  for bad in (0, -1, 6, 2.5, True):
    with pytest.raises(ValueError, match="k must be an integer with 1 <= k <= 5"):
      W.robust_first_order(p, bad)
  tied = np.array([3.0, 1.0, 1.0, 0.0])  # tie at the 2nd/3rd value
  with pytest.raises(ValueError, match="k=2: no L2 strength"):
    W.robust_first_order(tied, 2, break_ties=False)
  idx, w, _ = W.robust_first_order(tied, 2)
  assert list(idx) == [0, 1] and np.count_nonzero(w) == 2
  with pytest.raises(ValueError, match="lam must be a finite number > 0"):
    W.qp_weights(jnp.ones(3), lambda v: v, 1.0, 0.0, 3.0)
