"""The multi-domain linear-regression model of arXiv 2511.06913 and its closed forms.

Model: one ground truth theta* in R^D shared by all K domains; domain i draws x ~ N(0, Sigma_i)
and y = theta*^T x + eps with eps ~ N(0, sigma_i^2) independent of x; loss l = (y - theta^T x)^2/2.
Population risk L_i(theta) = delta^T Sigma_i delta / 2 + sigma_i^2 / 2 with delta = theta - theta*,
so the excess pi-risk is delta^T Sigma_pi delta / 2, Sigma_pi = sum_i pi_i Sigma_i.

The paper's experiments vary one scalar C_i per domain with "larger C = better data"; its exact
meaning is not confirmed, so both readings are implemented (`reading`):
  'R1' (primary): quality scale, Sigma_i = I and sigma_i^2 = sigma0^2 / C_i;
  'R2':           feature scale, Sigma_i = C_i I and sigma_i^2 = sigma0^2.
Under R2 the GLS per-example weights are all equal, so loss weights cannot help; under R1 they
can, which matches the paper's report that each mechanism helps on its own.

Closed forms (derived from the model; the large-sample ones use X_i^T X_i ~ n_i Sigma_i):
  weighted LS       theta_w = (sum a_i X_i^T X_i)^{-1} sum a_i X_i^T y_i;
  asymptotic cov    H^{-1} (sum a_i^2 sigma_i^2 n_i Sigma_i) H^{-1},  H = sum a_i n_i Sigma_i;
  exact, K = 1      E||theta - theta*||^2 = sigma^2 tr(Sigma^{-1}) / (n - D - 1);
  gradient variance v_i^2 = ||Sigma_i delta||^2 + (delta^T Sigma_i delta) tr Sigma_i
                            + sigma_i^2 tr Sigma_i;
  ERMA moments      L_i = s_i^2 / 2, Var_i = s_i^4 / 2,
                    s_i^2 = sigma_i^2 + delta^T Sigma_i delta;
  SGD noise floor   E||theta_t - theta_w||^2 ~ (eta / 2) tr(H^{-1} Q) for small constant eta.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tnx import validation
from tnx.mixing import weights as W
from tnx.mixing.pools import Pools

READINGS = ("R1", "R2")


@dataclasses.dataclass(frozen=True)
class LinearProblem:
  """K-domain linear regression: cov [K, D, D], sigma2 [K], pi [K], per-domain split sizes.

  theta* ~ N(0, theta_scale^2 I_D / D) (so E||theta*||^2 = theta_scale^2).
  """
  cov: np.ndarray
  sigma2: np.ndarray
  pi: np.ndarray
  n_train: tuple[int, ...]
  n_val: tuple[int, ...]
  theta_scale: float = 1.0

  def __post_init__(self):
    cov = np.asarray(self.cov, np.float64)
    if cov.ndim != 3 or cov.shape[1] != cov.shape[2]:
      raise ValueError(f"cov must have shape [K, D, D], got {list(cov.shape)}")
    k = cov.shape[0]
    for i in range(k):
      if not np.allclose(cov[i], cov[i].T) or np.linalg.eigvalsh(cov[i]).min() <= 0:
        raise ValueError(f"cov[{i}] must be symmetric positive definite")
    object.__setattr__(self, "cov", cov)
    object.__setattr__(self, "sigma2", W.check_vector("sigma2", self.sigma2, k, positive=True))
    object.__setattr__(self, "pi", W.check_pi(self.pi, k))
    object.__setattr__(self, "n_train", tuple(int(v) for v in W.check_counts(
        np.asarray(self.n_train), k, "n_train")))
    object.__setattr__(self, "n_val", tuple(int(v) for v in W.check_counts(
        np.asarray(self.n_val), k, "n_val")))
    validation.positive("theta_scale", self.theta_scale)

  @property
  def num_domains(self) -> int:
    return self.cov.shape[0]

  @property
  def dim(self) -> int:
    return self.cov.shape[1]


def make_problem(d: int, c: Sequence[float] = (1.0, 1.0), *, reading: str = "R1",
                 sigma0_2: float = 1.0, pi: Sequence[float] | None = None,
                 n_train: int | Sequence[int] = 2000, n_val: int | Sequence[int] = 500,
                 theta_scale: float = 1.0) -> LinearProblem:
  """The experiments' problem from per-domain scalars C_i under reading 'R1' or 'R2'."""
  d = validation.positive_int("d", d)
  validation.one_of("reading", reading, READINGS)
  c = W.check_vector("c", c, positive=True)
  k = len(c)
  sigma0_2 = validation.positive("sigma0_2", sigma0_2)
  if reading == "R1":
    cov, sigma2 = np.stack([np.eye(d)] * k), sigma0_2 / c
  else:
    cov, sigma2 = c[:, None, None] * np.eye(d)[None], np.full(k, sigma0_2)
  pi = np.full(k, 1.0 / k) if pi is None else pi
  as_tuple = lambda v: (int(v),) * k if np.ndim(v) == 0 else tuple(int(x) for x in v)
  return LinearProblem(cov, sigma2, pi, as_tuple(n_train), as_tuple(n_val), theta_scale)


def sample(seed: int, problem: LinearProblem, dtype: Any = None
           ) -> tuple[jax.Array, Pools, Pools]:
  """(theta* [D], train Pools, validation Pools) with data {'x': [K, N, D], 'y': [K, N]}.

  Generated on the host from `seed` (numpy): one seed gives every method the same theta* and
  data (common random numbers), and no XLA compilation is spent on random generation; stack
  several seeds with `montecarlo.stack` to vmap over them.
  """
  dtype = dtype or jnp.zeros(()).dtype
  rng = np.random.default_rng(seed)
  k, d = problem.num_domains, problem.dim
  theta = problem.theta_scale * rng.standard_normal(d) / np.sqrt(d)
  chol = np.linalg.cholesky(problem.cov)
  sd = np.sqrt(problem.sigma2)

  def pool(counts):
    n_max = max(counts)
    x = np.einsum("kde,kne->knd", chol, rng.standard_normal((k, n_max, d)))
    y = x @ theta + sd[:, None] * rng.standard_normal((k, n_max))
    mask = np.arange(n_max)[None, :] < np.asarray(counts)[:, None]
    return Pools({"x": jnp.asarray(np.where(mask[..., None], x, 0.0), dtype),
                  "y": jnp.asarray(np.where(mask, y, 0.0), dtype)},
                 jnp.asarray(counts, jnp.int32))

  train = pool(problem.n_train)
  return jnp.asarray(theta, dtype), train, pool(problem.n_val)


# --------------------------------------------------------------------------- losses
def squared_loss(theta: jax.Array, example: dict[str, jax.Array]) -> jax.Array:
  """Per-example loss (y - theta^T x)^2 / 2."""
  return 0.5 * (example["y"] - example["x"] @ theta) ** 2


def excess_risk(theta: jax.Array, theta_star: jax.Array, cov_KxDxD: jax.Array,
                pi_K: jax.Array) -> jax.Array:
  """delta^T Sigma_pi delta / 2."""
  delta = theta - theta_star
  return 0.5 * delta @ jnp.einsum("k,kde->de", pi_K, cov_KxDxD) @ delta


def _mask(pools: Pools) -> jax.Array:
  return jnp.arange(pools.data["x"].shape[1])[None, :] < pools.n[:, None]


def weighted_ls(pools: Pools, a_K: jax.Array) -> jax.Array:
  """theta_w = argmin sum_i a_i sum_j (y_ij - theta^T x_ij)^2 (a_i = per-example weight)."""
  m = _mask(pools)
  x = jnp.where(m[..., None], pools.data["x"], 0.0)
  y = jnp.where(m, pools.data["y"], 0.0)
  h = jnp.einsum("k,knd,kne->de", a_K, x, x)
  rhs = jnp.einsum("k,knd,kn->d", a_K, x, y)
  return jnp.linalg.solve(h, rhs)


def per_example_grads(theta: jax.Array, pools: Pools) -> jax.Array:
  """x (x^T theta - y) for every example, zero on padding ([K, N, D])."""
  r = pools.data["x"] @ theta - pools.data["y"]
  return jnp.where(_mask(pools)[..., None], pools.data["x"] * r[..., None], 0.0)


def empirical_grad_moments(theta: jax.Array, pools: Pools) -> tuple[jax.Array, jax.Array]:
  """(within-domain gradient covariance [K, D, D], its trace v_i^2 [K]) over each sample S_i,
  normalised by 1/n_i as in the paper's variance formula."""
  g = per_example_grads(theta, pools)
  n = pools.n.astype(g.dtype)
  mean = jnp.sum(g, axis=1) / n[:, None]
  c = jnp.where(_mask(pools)[..., None], g - mean[:, None, :], 0.0)
  cov = jnp.einsum("knd,kne->kde", c, c) / n[:, None, None]
  return cov, jnp.trace(cov, axis1=1, axis2=2)


def population_grad_variance(delta: jax.Array, cov_KxDxD: jax.Array, sigma2_K: jax.Array
                             ) -> jax.Array:
  """v_i^2(theta) = ||Sigma_i delta||^2 + (delta^T Sigma_i delta) tr Sigma_i + sigma_i^2 tr Sigma_i
  for Gaussian features ([K])."""
  sd = jnp.einsum("kde,e->kd", cov_KxDxD, delta)
  tr = jnp.trace(cov_KxDxD, axis1=1, axis2=2)
  return jnp.sum(sd**2, axis=1) + (sd @ delta) * tr + sigma2_K * tr


def erma_moments(delta: jax.Array, cov_KxDxD: jax.Array, sigma2_K: jax.Array
                 ) -> tuple[jax.Array, jax.Array]:
  """Population (mean, variance) of the per-example squared loss in each domain: the residual
  is N(0, s_i^2) with s_i^2 = sigma_i^2 + delta^T Sigma_i delta, so L = s^2/2, Var = s^4/2."""
  s2 = sigma2_K + jnp.einsum("d,kde,e->k", delta, cov_KxDxD, delta)
  return s2 / 2, s2**2 / 2


# --------------------------------------------------------------------------- estimator error
def asymptotic_covariance(a_K: jax.Array, n_K: jax.Array, cov_KxDxD: jax.Array,
                          sigma2_K: jax.Array) -> jax.Array:
  """Large-sample Cov(theta_w) = H^{-1} (sum a^2 sigma^2 n Sigma) H^{-1}, H = sum a n Sigma."""
  h = jnp.einsum("k,kde->de", a_K * n_K, cov_KxDxD)
  mid = jnp.einsum("k,kde->de", a_K**2 * sigma2_K * n_K, cov_KxDxD)
  hinv = jnp.linalg.inv(h)
  return hinv @ mid @ hinv


def asymptotic_error(a_K: jax.Array, problem: LinearProblem, *, risk: bool = False
                     ) -> jax.Array:
  """Large-sample E||theta_w - theta*||^2, or with `risk` the expected excess pi-risk
  tr(Sigma_pi Cov) / 2, for per-example weights a on `problem`'s training split."""
  cov = asymptotic_covariance(a_K, jnp.asarray(problem.n_train, a_K.dtype),
                              jnp.asarray(problem.cov, a_K.dtype),
                              jnp.asarray(problem.sigma2, a_K.dtype))
  if risk:
    sig_pi = jnp.einsum("k,kde->de", jnp.asarray(problem.pi, a_K.dtype),
                        jnp.asarray(problem.cov, a_K.dtype))
    return 0.5 * jnp.trace(sig_pi @ cov)
  return jnp.trace(cov)


def isotropic_s(a_K: jax.Array, n_K: jax.Array, c_K: jax.Array, sigma2_K: jax.Array
                ) -> jax.Array:
  """s(a) = sum a^2 sigma^2 n C / (sum a n C)^2: Cov ~ s(a) I when Sigma_i = C_i I."""
  return jnp.sum(a_K**2 * sigma2_K * n_K * c_K) / jnp.sum(a_K * n_K * c_K) ** 2


def reference_errors(problem: LinearProblem) -> dict[str, float]:
  """Large-sample E||theta - theta*||^2 of pooled OLS (a equal) and GLS (a = 1/sigma^2)."""
  sig = jnp.asarray(problem.sigma2)
  return {"ols": float(asymptotic_error(jnp.ones_like(sig), problem)),
          "gls": float(asymptotic_error(1.0 / sig, problem))}


def exact_single_domain_error(sigma2: float, cov_DxD: np.ndarray, n: int) -> float:
  """Exact E||theta_OLS - theta*||^2 for one Gaussian domain: sigma^2 tr(Sigma^{-1})/(n-D-1)."""
  d = cov_DxD.shape[0]
  if n <= d + 1:
    raise ValueError(f"n={n} must exceed D + 1 = {d + 1} for a finite expectation")
  return float(sigma2 * np.trace(np.linalg.inv(cov_DxD)) / (n - d - 1))


# --------------------------------------------------------------------------- SGD noise floor
def sgd_quadratic(theta_w: jax.Array, pools: Pools, pi_K: jax.Array, w_K: jax.Array,
                  b_K: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(H, Q) of the weighted objective at its minimiser theta_w: H = sum pi w Sigmahat_i, and the
  stratified gradient-noise covariance Q = sum pi^2 w^2 Cov_i / b_i (with replacement)."""
  m = _mask(pools)
  x = jnp.where(m[..., None], pools.data["x"], 0.0)
  n = pools.n.astype(x.dtype)
  sig_hat = jnp.einsum("knd,kne->kde", x, x) / n[:, None, None]
  h = jnp.einsum("k,kde->de", pi_K * w_K, sig_hat)
  cov, _ = empirical_grad_moments(theta_w, pools)
  q = jnp.einsum("k,kde->de", (pi_K * w_K) ** 2 / b_K, cov)
  return h, q


def sgd_noise_floor(eta: float, h_DxD: jax.Array, q_DxD: jax.Array) -> jax.Array:
  """Small-step stationary E||theta - theta_w||^2 = (eta / 2) tr(H^{-1} Q)."""
  return 0.5 * eta * jnp.trace(jnp.linalg.solve(h_DxD, q_DxD))
