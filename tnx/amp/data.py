"""Ground-truth models and label noise for retraining with noisy labels.

Two ground truths, both binary with labels in {-1, +1}:

* GMM: `y ~ prior`, `x = y * mu + z`, `z ~ N(0, I_d)`, `||mu|| = gamma`.
* GLM: `x ~ N(0, I_d)`, `Z* = <x, beta*>`, `||beta*|| = gamma`, `y = sign(Z*)`.

Label noise flips the clean label with a class-dependent probability:
`p_plus = P(yhat = -1 | y = +1)`, `p_minus = P(yhat = +1 | y = -1)`; symmetric noise has
`p_plus = p_minus = p`. All rates lie in [0, 1/2).

Dimension letters: N samples, D features.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tnx import validation

MODELS = ("gmm", "glm")


class Problem(NamedTuple):
  """Scalar (or batched, for vmap) parameters of one retraining problem.

  gamma: signal strength `||mu||` (GMM) or `||beta*||` (GLM).
  alpha: aspect ratio `n / d`.
  prior: `P(y = +1)` (GMM only; the sign-link GLM is balanced and uses 1/2).
  p_plus, p_minus: class-conditional flip rates, see the module docstring.
  """
  gamma: jax.Array
  alpha: jax.Array
  prior: jax.Array
  p_plus: jax.Array
  p_minus: jax.Array


def make_problem(gamma: float, alpha: float, p: float, *, prior: float = 0.5,
                 p_minus: float | None = None, dtype=None) -> Problem:
  """Validated scalar `Problem`; `p` is the flip rate of class +1 (and of -1 unless `p_minus`).

  `dtype=None` uses jax's default float (float64 when x64 is enabled).
  """
  validation.positive("gamma", gamma)
  validation.positive("alpha", alpha)
  validation.in_range("prior", prior, 0.0, 1.0, low_open=True, high_open=True)
  validation.in_range("p", p, 0.0, 0.5, high_open=True)
  pm = p if p_minus is None else p_minus
  validation.in_range("p_minus", pm, 0.0, 0.5, high_open=True)
  dtype = jnp.result_type(float) if dtype is None else dtype
  f = lambda v: jnp.asarray(v, dtype=dtype)
  return Problem(f(gamma), f(alpha), f(prior), f(p), f(pm))


def check_problem(problem: Problem) -> Problem:
  """Checks a (scalar or batched) `Problem` built by hand: gamma, alpha > 0 and finite,
  prior in (0, 1), flip rates in [0, 1/2); fields of one shape. Traced values pass unchecked.

  Returns `problem` unchanged, so entry points can write `problem = check_problem(problem)`.
  """
  if not isinstance(problem, Problem):
    raise ValueError(f"problem must be a tnx.amp.Problem (see make_problem), got "
                     f"{type(problem).__name__}")
  shapes = {f: np.shape(getattr(problem, f)) for f in Problem._fields}
  if len(set(shapes.values())) != 1:
    raise ValueError(f"problem fields must share one shape, got {shapes}")
  bounds = {"gamma": (0.0, np.inf, True, True), "alpha": (0.0, np.inf, True, True),
            "prior": (0.0, 1.0, True, True), "p_plus": (0.0, 0.5, False, True),
            "p_minus": (0.0, 0.5, False, True)}
  for name, (low, high, low_open, high_open) in bounds.items():
    a = validation.concrete(getattr(problem, name))
    if a is None:
      continue
    a = a.astype(np.float64)
    ok = np.isfinite(a) & ((a > low) if low_open else (a >= low)) & (
        (a < high) if high_open else (a <= high))
    if not np.all(ok):
      lb, rb = "(" if low_open else "[", ")" if high_open else "]"
      raise ValueError(f"problem.{name} must lie in {lb}{low}, {high}{rb}, found e.g. "
                       f"{a[~ok].ravel()[:3].tolist()}")
  return problem


def problem_grid(*, gamma, alpha, p, prior=0.5, p_minus=None, dtype=None) -> Problem:
  """Outer product of 1-D value lists, flattened to a batched `Problem` of size G.

  `p_minus=None` ties the two flip rates (symmetric noise) for every grid point.
  Returns a `Problem` whose fields have shape [G], ready for `jax.vmap`.
  """
  axes = [np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (gamma, alpha, prior, p)]
  pm_axis = None if p_minus is None else np.atleast_1d(np.asarray(p_minus, dtype=np.float64))
  grids = np.meshgrid(*axes, *([] if pm_axis is None else [pm_axis]), indexing="ij")
  flat = [g.ravel() for g in grids]
  g_, a_, pr_, p_ = flat[:4]
  pm_ = p_ if pm_axis is None else flat[4]
  for i in range(g_.size):
    make_problem(g_[i], a_[i], p_[i], prior=pr_[i], p_minus=pm_[i])
  dtype = jnp.result_type(float) if dtype is None else dtype
  f = lambda v: jnp.asarray(v, dtype=dtype)
  return Problem(f(g_), f(a_), f(pr_), f(p_), f(pm_))


def check_labels(name: str, y) -> None:
  """Raises ValueError unless every entry of the concrete array `y` is -1 or +1."""
  a = np.asarray(y)
  bad = a[(a != 1) & (a != -1)]
  if bad.size:
    raise ValueError(f"{name} must contain only -1 and +1, found e.g. {bad.ravel()[:3].tolist()}")


def flip_labels(key: jax.Array, y: jax.Array, p_plus, p_minus) -> jax.Array:
  """Class-conditional flips. y: [N] in {-1,+1} -> yhat: [N] (same dtype)."""
  rate = jnp.where(y > 0, p_plus, p_minus)
  flip = jax.random.uniform(key, y.shape, dtype=jnp.result_type(float)) < rate
  return jnp.where(flip, -y, y)


def noisy_labels(key: jax.Array, y, p: float, *, p_minus: float | None = None) -> jax.Array:
  """Validated entry point for `flip_labels`: y [N] in {-1,+1}, rates in [0, 1/2)."""
  check_labels("y", y)
  validation.in_range("p", p, 0.0, 0.5, high_open=True)
  pm = p if p_minus is None else p_minus
  validation.in_range("p_minus", pm, 0.0, 0.5, high_open=True)
  return flip_labels(key, jnp.asarray(y), p, pm)


def label_log_ratio(yhat, p_plus, p_minus):
  """`log P(yhat | y=+1) - log P(yhat | y=-1)` for yhat in {-1,+1} (shape of yhat).

  Rates of exactly 0 give +-inf, which the tanh/sigmoid aggregators handle.
  """
  pos = jnp.log1p(-p_plus) - jnp.log(p_minus)
  neg = jnp.log(p_plus) - jnp.log1p(-p_minus)
  return jnp.where(yhat > 0, pos, neg)


def label_given_class(yhat, y_class, p_plus, p_minus):
  """`P(yhat | y = y_class)` elementwise."""
  flip = jnp.where(y_class > 0, p_plus, p_minus)
  return jnp.where(yhat == y_class, 1.0 - flip, flip)


def sample_gmm(key: jax.Array, n: int, d: int, problem: Problem, dtype=jnp.float32):
  """GMM data. Returns (x [N, D], y [N], yhat [N], mu [D]) with `||mu|| = gamma`.

  `mu` points along the all-ones direction; since `z` is isotropic this loses no generality.
  """
  ky, kz, kf = jax.random.split(key, 3)
  y = jnp.where(jax.random.uniform(ky, (n,)) < problem.prior, 1.0, -1.0).astype(dtype)
  mu = (jnp.ones((d,), dtype) * problem.gamma / jnp.sqrt(d)).astype(dtype)
  x = y[:, None] * mu[None, :] + jax.random.normal(kz, (n, d), dtype)
  return x, y, flip_labels(kf, y, problem.p_plus, problem.p_minus).astype(dtype), mu


def sample_glm(key: jax.Array, n: int, d: int, problem: Problem, dtype=jnp.float32):
  """Sign-link GLM data. Returns (x [N, D], y [N], yhat [N], beta [D], z_star [N])."""
  kx, kf = jax.random.split(key)
  x = jax.random.normal(kx, (n, d), dtype)
  beta = (jnp.ones((d,), dtype) * problem.gamma / jnp.sqrt(d)).astype(dtype)
  z_star = x @ beta
  y = jnp.where(z_star >= 0, 1.0, -1.0).astype(dtype)
  return x, y, flip_labels(kf, y, problem.p_plus, problem.p_minus).astype(dtype), beta, z_star


def validate_sizes(n, d) -> tuple[int, int]:
  return validation.positive_int("n", n), validation.positive_int("d", d)
