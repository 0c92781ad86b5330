"""Loss weights for K domains (arXiv 2511.06913): validation, normalisation, the optimal
(GLS) weights for linear regression, and the two online rules, one-shot FGLS and ERMA.

Notation (dimension letter K = number of domains):
  pi_K     domain importances, pi_i >= 0, sum 1 (what the final model should care about);
  w_K      loss weights, w_i > 0; the objective is sum_i pi_i w_i L_i(theta). Only the ratios
           matter for the minimiser, so tnx normalises to sum_i pi_i w_i = 1 (w = 1 is the
           baseline; this convention is ours, the paper does not fix a scale);
  n_K      training examples per domain; a_i = pi_i w_i / n_i is the weight of one example.

Every function is pure and jit-able except the `check_*` validators, which run on concrete
values at public entry points and raise ValueError naming the argument.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tnx import validation


# --------------------------------------------------------------------------- validation
def check_vector(name: str, x: Any, k: int | None = None, *, positive: bool = False,
                 allow_zero_sum: bool = False) -> np.ndarray:
  """A concrete 1-D float vector of length k with finite entries >= 0 (> 0 if `positive`)
  and not all zero; raises ValueError naming `name` otherwise."""
  a = np.asarray(x, dtype=np.float64)
  if a.ndim != 1 or a.size == 0:
    raise ValueError(f"{name} must be a non-empty 1-D vector, got shape {list(a.shape)}")
  if k is not None and a.size != k:
    raise ValueError(f"{name} must have one entry per domain (K={k}), got {a.size} entries")
  if not np.all(np.isfinite(a)):
    raise ValueError(f"{name} must be finite, got {a.tolist()}")
  if positive and np.any(a <= 0):
    raise ValueError(f"{name} must have all entries > 0, got {a.tolist()}")
  if np.any(a < 0):
    raise ValueError(f"{name} must have all entries >= 0, got {a.tolist()}")
  if not allow_zero_sum and not np.any(a > 0):
    raise ValueError(f"{name} must not be all zero, got {a.tolist()}")
  return a


def check_pi(pi: Any, k: int | None = None, *, atol: float = 1e-6, name: str = "pi"
             ) -> np.ndarray:
  """Domain importances: K finite entries >= 0 summing to 1 (within atol)."""
  a = check_vector(name, pi, k)
  if abs(a.sum() - 1.0) > atol:
    raise ValueError(f"{name} must sum to 1 (a distribution over domains), got sum "
                     f"{a.sum():.6g} for {a.tolist()}")
  return a


def check_loss_weights(w: Any, k: int | None = None, name: str = "loss_weights") -> np.ndarray:
  """Loss weights: K finite entries > 0 (any scale; normalise with `normalize`)."""
  return check_vector(name, w, k, positive=True)


def check_counts(n: Any, k: int | None = None, name: str = "n") -> np.ndarray:
  """Examples per domain: K integers >= 1 (an empty domain is an error)."""
  a = np.asarray(n)
  if a.ndim != 1 or a.size == 0 or (k is not None and a.size != k):
    raise ValueError(f"{name} must list one example count per domain (K={k}), got {a.tolist()}")
  if not np.issubdtype(a.dtype, np.integer) and not np.all(np.mod(a, 1) == 0):
    raise ValueError(f"{name} must hold integer counts, got {a.tolist()}")
  if np.any(a < 1):
    empty = [int(i) for i in np.flatnonzero(a < 1)]
    raise ValueError(f"{name}: domains {empty} are empty ({a.tolist()}); every domain needs "
                     "at least one example")
  return a.astype(np.int64)


def check_budget(batch_size: Any, k: int, name: str = "batch_size") -> int:
  """A batch budget B >= K (every domain gets at least one example per step)."""
  b = validation.positive_int(name, batch_size)
  if b < k:
    raise ValueError(f"{name}={b} is smaller than the number of domains K={k}; every domain "
                     "needs at least one example per batch")
  return b


# --------------------------------------------------------------------------- closed forms
def normalize(pi_K: jax.Array, w_K: jax.Array) -> jax.Array:
  """Rescales loss weights so that sum_i pi_i w_i = 1."""
  return w_K / jnp.sum(pi_K * w_K)


def per_example_weights(pi_K: jax.Array, w_K: jax.Array, n_K: jax.Array) -> jax.Array:
  """a_i = pi_i w_i / n_i: the weight one training example of domain i carries."""
  return pi_K * w_K / n_K


def loss_weights_from_example_weights(a_K: jax.Array, pi_K: jax.Array, n_K: jax.Array
                                      ) -> jax.Array:
  """Inverse of `per_example_weights`, normalised (w_i proportional to a_i n_i / pi_i)."""
  return normalize(pi_K, a_K * n_K / pi_K)


def gls_weights(sigma2_K: jax.Array, n_K: jax.Array, pi_K: jax.Array) -> jax.Array:
  """Optimal loss weights for linear regression with per-domain noise sigma_i^2 (Aitken/GLS).

  Per-example weights a_i proportional to 1/sigma_i^2 give the best linear unbiased estimator,
  whose covariance is minimal in the Loewner order; in the pi-weighted parameterisation this
  is w_i proportional to n_i / (pi_i sigma_i^2) (equal to 1/sigma_i^2 when pi is proportional
  to n). The implied per-example weights do not depend on pi. Domains with pi_i = 0 get w = 0.
  """
  w = jnp.where(pi_K > 0, n_K / (jnp.where(pi_K > 0, pi_K, 1.0) * sigma2_K), 0.0)
  return normalize(pi_K, w)


# --------------------------------------------------------------------------- online rules
class EMA(NamedTuple):
  """An exponential moving average per domain; `count` = updates absorbed so far."""
  value: jax.Array  # [K]
  count: jax.Array  # [] int32


def ema_init(k: int, value: float = 1.0, dtype: Any = jnp.float32) -> EMA:
  return EMA(jnp.full((k,), value, dtype), jnp.zeros((), jnp.int32))


def ema_update(ema: EMA, x_K: jax.Array, beta: float, *, from_first: bool) -> EMA:
  """value <- (1 - beta) value + beta x; with `from_first` the first update sets value = x."""
  new = (1.0 - beta) * ema.value + beta * x_K
  if from_first:
    new = jnp.where(ema.count == 0, x_K, new)
  return EMA(new.astype(ema.value.dtype), ema.count + 1)


def fgls_weights(noise_K: jax.Array, n_K: jax.Array, pi_K: jax.Array) -> jax.Array:
  """One-shot FGLS loss weights from the current noise estimates (the GLS form with
  sigma^2 replaced by its estimate; arXiv 2511.06913 Algorithm 1). Estimates are floored at a
  tiny positive value so a domain fitted exactly cannot produce an infinite weight."""
  tiny = jnp.finfo(noise_K.dtype).tiny ** 0.5
  return gls_weights(jnp.maximum(noise_K, tiny), n_K, pi_K)


def erma_update(w_K: jax.Array, pi_K: jax.Array, loss_K: jax.Array, var_K: jax.Array, *,
                gamma1: float, gamma2: float, g: jax.Array | float = 1.0) -> jax.Array:
  """One ERMA step (arXiv 2511.06913): multiplicative in log space, then renormalised,

    log w_i <- log w_i + gamma1 pi_i G L_i - gamma2 pi_i w_i Var_i,   sum_i pi_i w_i = 1.

  loss_K: per-domain mean loss L_i at the current iterate; var_K: per-domain variance of the
  per-example loss. The first term moves weight towards high-loss domains, the second away
  from domains whose loss is noisy. G (`g`) is a time-varying factor whose exact definition the
  paper's summary does not give; tnx exposes it as an argument (see MixingConfig.erma_g).
  """
  logw = jnp.log(w_K) + gamma1 * pi_K * g * loss_K - gamma2 * pi_K * w_K * var_K
  logw = logw - jnp.max(logw)  # keeps exp finite; normalisation removes the shift
  return normalize(pi_K, jnp.exp(logw))


def erma_stationary(pi_K: jax.Array, loss_K: jax.Array, var_K: jax.Array, *, gamma1: float,
                    gamma2: float, g: float = 1.0, iters: int = 200) -> jax.Array:
  """Fixed point of `erma_update` for fixed (L, Var): pi_i (gamma1 G L_i - gamma2 w_i Var_i)
  equals one constant c for every domain, with c set by sum pi w = 1 (bisection on c)."""
  def w_of(c):
    return jnp.maximum(gamma1 * g * loss_K - c / pi_K, 0.0) / (gamma2 * var_K)

  hi0 = jnp.max(pi_K * gamma1 * g * loss_K)
  lo0 = hi0 - 1.0
  # widen lo until sum(pi w) >= 1, then bisect
  lo = jax.lax.while_loop(lambda lo: jnp.sum(pi_K * w_of(lo)) < 1.0,
                          lambda lo: lo - 2.0 * (hi0 - lo), lo0)

  def body(_, lh):
    lo, hi = lh
    mid = 0.5 * (lo + hi)
    big = jnp.sum(pi_K * w_of(mid)) >= 1.0
    return jnp.where(big, mid, lo), jnp.where(big, hi, mid)

  lo, hi = jax.lax.fori_loop(0, iters, body, (lo, hi0))
  return normalize(pi_K, w_of(0.5 * (lo + hi)))
