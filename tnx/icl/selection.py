"""Task selection for test-time scaling (arXiv 2510.03605, section 4, Proposition 4.3).

Choose family probabilities pi on the simplex so that the mixed training covariance mimics the
test covariance:

    min_pi || I - Sigma^{-1} sum_l pi_l Lambda_l ||_F^2   s.t.  pi >= 0, sum pi = 1.

With M_l = Sigma^{-1} Lambda_l, G_{ll'} = tr(M_l^T M_l') and b_l = tr(M_l), the objective is
the convex quadratic d - 2 b^T pi + pi^T G pi. Two solvers, checked against each other:
scipy's SLSQP and an optax projected gradient (Nesterov momentum, step 1 / (2 lambda_max(G)),
Euclidean projection onto the simplex after every step). `kkt` reports feasibility, the
projected-gradient residual and complementary slackness of a candidate.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize

from tnx import validation
from tnx.icl.task import check_cov

METHODS = ("slsqp", "pgd")


class SelectionProblem(NamedTuple):
  g_TxT: np.ndarray
  b_T: np.ndarray
  d: int


def problem(sig: Any, lams: Any) -> SelectionProblem:
  """G, b and d of the quadratic for a test covariance Sigma [d, d] (positive definite) and
  family covariances Lambda_l [T, d, d] (positive semi-definite)."""
  sig = check_cov("sig", sig)
  lams = np.asarray(lams, np.float64)
  if lams.ndim != 3 or lams.shape[0] < 1:
    raise ValueError(f"lams must be [T, d, d] with T >= 1, got shape {list(lams.shape)}")
  lams = np.stack([check_cov(f"lams[{t}]", l, d=len(sig), allow_singular=True)
                   for t, l in enumerate(lams)])
  m_TxDxD = np.linalg.solve(sig[None], lams)
  g = np.einsum("aij,bij->ab", m_TxDxD, m_TxDxD)
  b = np.trace(m_TxDxD, axis1=1, axis2=2)
  return SelectionProblem((g + g.T) / 2, b, len(sig))


def objective(pi: Any, prob: SelectionProblem) -> float:
  pi = np.asarray(pi, np.float64)
  return float(prob.d - 2 * prob.b_T @ pi + pi @ prob.g_TxT @ pi)


def solve_slsqp(prob: SelectionProblem, *, tol: float = 1e-14, max_iter: int = 1000
                ) -> np.ndarray:
  """scipy SLSQP with the equality constraint and [0, 1] bounds, from the uniform mix."""
  t = len(prob.b_T)
  res = scipy.optimize.minimize(
      lambda p: objective(p, prob), np.full(t, 1 / t),
      jac=lambda p: 2 * (prob.g_TxT @ p - prob.b_T), method="SLSQP", bounds=[(0, 1)] * t,
      constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1, "jac": lambda p: np.ones(t)}],
      options={"ftol": tol, "maxiter": max_iter})
  pi = _clean(res.x)
  # SLSQP may stop with a line-search message once f is at round-off level; accept the point
  # when it satisfies the optimality conditions, fail loudly otherwise.
  if not res.success and kkt(pi, prob).pg_residual > 1e-8 * max(1.0, np.abs(prob.b_T).max()):
    raise RuntimeError(f"SLSQP failed: {res.message} (projected-gradient residual "
                       f"{kkt(pi, prob).pg_residual:.3g})")
  return pi


def solve_projected_gradient(prob: SelectionProblem, *, steps: int = 20000,
                             momentum: float = 0.9) -> np.ndarray:
  """Projected gradient on the simplex with optax (Nesterov SGD + projection_simplex)."""
  steps = validation.positive_int("steps", steps)
  momentum = validation.in_range("momentum", momentum, 0, 1, high_open=True)
  lip = 2 * float(np.linalg.eigvalsh(prob.g_TxT)[-1])
  pi = _pgd(jnp.asarray(prob.g_TxT), jnp.asarray(prob.b_T), 1.0 / max(lip, 1e-300),
            steps=steps, momentum=momentum)
  return _clean(np.asarray(pi, np.float64))


@functools.partial(jax.jit, static_argnames=("steps", "momentum"))
def _pgd(g_TxT: jax.Array, b_T: jax.Array, lr: jax.Array, *, steps: int, momentum: float
         ) -> jax.Array:
  tx = optax.sgd(lr, momentum=momentum or None, nesterov=momentum > 0)
  pi = jnp.full(b_T.shape, 1 / b_T.shape[0], g_TxT.dtype)

  def step(carry, _):
    pi, state = carry
    updates, state = tx.update(2 * (g_TxT @ pi - b_T), state, pi)
    pi = optax.projections.projection_simplex(optax.apply_updates(pi, updates))
    return (pi, state), None

  return jax.lax.scan(step, (pi, tx.init(pi)), None, length=steps)[0][0]


def _clean(pi: np.ndarray) -> np.ndarray:
  """Clips round-off below 0 and renormalises (the solvers are feasible up to ~1e-15)."""
  pi = np.where(pi < 0, 0.0, pi)
  return pi / pi.sum()


class KKT(NamedTuple):
  simplex_violation: float   # max(|sum - 1|, max(-pi))
  pg_residual: float         # || pi - proj(pi - grad) ||_inf  (0 at the optimum)
  stationarity: float        # max over the support of |grad_l - min grad|
  dual_violation: float      # max over l of (min grad - grad_l)^+  (0 at the optimum)


def kkt(pi: Any, prob: SelectionProblem) -> KKT:
  """KKT diagnostics of a candidate: grad_l = nu on the support, grad_l >= nu off it."""
  pi = np.asarray(pi, np.float64)
  grad = 2 * (prob.g_TxT @ pi - prob.b_T)
  proj = np.asarray(optax.projections.projection_simplex(jnp.asarray(pi - grad)), np.float64)
  support = pi > 1e-10
  nu = grad[support].min() if support.any() else grad.min()
  return KKT(max(abs(pi.sum() - 1), float(max(-pi.min(), 0))),
             float(np.max(np.abs(pi - proj))),
             float(np.max(np.abs(grad[support] - nu))) if support.any() else 0.0,
             float(max(0.0, np.max(nu - grad))))


class Selection(NamedTuple):
  pi: np.ndarray             # the solution [T]: SLSQP's or PGD's, whichever meets KKT better
  pi_pgd: np.ndarray         # projected-gradient solution [T]
  objective: float
  max_disagreement: float    # max |pi - pi_pgd|
  kkt: KKT


def select(sig: Any, lams: Any, *, pgd_steps: int = 20000) -> Selection:
  """Solves the program with both solvers and reports their agreement and KKT residuals."""
  prob = problem(sig, lams)
  pi = solve_slsqp(prob)
  pi_pgd = solve_projected_gradient(prob, steps=pgd_steps)
  # report the candidate closer to optimality (smaller projected-gradient residual)
  best = pi if kkt(pi, prob).pg_residual <= kkt(pi_pgd, prob).pg_residual else pi_pgd
  return Selection(best, pi_pgd, objective(best, prob), float(np.max(np.abs(pi - pi_pgd))),
                   kkt(best, prob))
