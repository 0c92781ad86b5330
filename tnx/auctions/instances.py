"""Auction instances: click-through tables, value priors and argument checks.

Dimension letters: B instances, N advertisers (one creative each), M candidate positions,
S enumerated allocations, G grid points of a score table.

A click-through table `p_BxNxM` holds the standalone probability that creative `i` is clicked
at position `j` when it is the only sponsored item. The generator draws
`p_ij = sigmoid(a_i + b_j + s * c_ij)` with `a ~ N(-1.5, 0.5^2)`, `b ~ N(0, 0.5^2)`,
`c ~ N(0, 1)`; `s = 0` is the classic separable case `p_ij = f(a_i) g(b_j)`-like ranking and
larger `s` makes the table strongly non-separable.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tnx import validation


class Instances(NamedTuple):
  """A batch of auctions: `p` (B, N, M) standalone CTRs and `v` (B, N) values per click."""
  p: jax.Array
  v: jax.Array


@dataclasses.dataclass(frozen=True)
class UniformPrior:
  """Values ~ U[low, high]; regular, virtual value `2v - high` for `low = 0`."""
  low: float = 0.0
  high: float = 1.0

  def __post_init__(self):
    low = validation.non_negative("UniformPrior.low", self.low)
    high = validation.positive("UniformPrior.high", self.high)
    if not low < high:
      raise ValueError(f"UniformPrior needs low < high, got low={self.low!r}, high={self.high!r}")

  def sample(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return jax.random.uniform(key, shape, jnp.float64, self.low, self.high)

  def quantile(self, u: np.ndarray) -> np.ndarray:
    """Inverse CDF F^{-1}(u) for u in [0, 1]."""
    return self.low + (self.high - self.low) * np.asarray(u, np.float64)

  def virtual_value(self, v: np.ndarray) -> np.ndarray:
    return 2.0 * np.asarray(v, np.float64) - self.high


@dataclasses.dataclass(frozen=True)
class ExponentialPrior:
  """Values ~ Exp(rate); regular and unbounded, virtual value `v - 1/rate`."""
  rate: float = 1.0

  def __post_init__(self):
    validation.positive("ExponentialPrior.rate", self.rate)

  def sample(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return jax.random.exponential(key, shape, jnp.float64) / self.rate

  def quantile(self, u: np.ndarray) -> np.ndarray:
    u = np.asarray(u, np.float64)
    with np.errstate(divide="ignore"):
      return -np.log1p(-u) / self.rate

  def virtual_value(self, v: np.ndarray) -> np.ndarray:
    return np.asarray(v, np.float64) - 1.0 / self.rate


@dataclasses.dataclass(frozen=True)
class BimodalPrior:
  """Irregular mixture `weight_low * U[0, a] + (1 - weight_low) * U[b, 1]` with `a < b`.

  The gap (a, b) carries no mass, so the revenue curve in quantile space has a downward jump at
  quantile `1 - weight_low` and must be ironed (the virtual value is -inf inside the gap).
  """
  weight_low: float = 0.7
  a: float = 0.3
  b: float = 0.7

  def __post_init__(self):
    validation.in_range("BimodalPrior.weight_low", self.weight_low, 0.0, 1.0, low_open=True,
                        high_open=True)
    a = validation.in_range("BimodalPrior.a", self.a, 0.0, 1.0, low_open=True, high_open=True)
    b = validation.in_range("BimodalPrior.b", self.b, 0.0, 1.0, low_open=True, high_open=True)
    if not a < b:
      raise ValueError(f"BimodalPrior needs 0 < a < b < 1 (a gap between the modes), got a={a}, "
                       f"b={b}")

  def sample(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return jnp.asarray(self.quantile_jax(jax.random.uniform(key, shape, jnp.float64)))

  def quantile_jax(self, u: jax.Array) -> jax.Array:
    wl = self.weight_low
    low = u / wl * self.a
    high = self.b + (u - wl) / (1.0 - wl) * (1.0 - self.b)
    return jnp.where(u < wl, low, high)

  def quantile(self, u: np.ndarray) -> np.ndarray:
    return np.asarray(self.quantile_jax(jnp.asarray(u, jnp.float64)))

  def virtual_value(self, v: np.ndarray) -> np.ndarray:
    """Unironed virtual value on the support (NaN in the gap)."""
    v = np.asarray(v, np.float64)
    wl, a, b = self.weight_low, self.a, self.b
    low = v - (1.0 - wl * v / a) / (wl / a)
    high = v - (1.0 - (wl + (1 - wl) * (v - b) / (1 - b))) / ((1 - wl) / (1 - b))
    return np.where(v <= a, low, np.where(v >= b, high, np.nan))


Prior = UniformPrior | ExponentialPrior | BimodalPrior
PRIORS: dict[str, Prior] = {
    "uniform": UniformPrior(),
    "exponential": ExponentialPrior(),
    "bimodal": BimodalPrior(),
}


def get_prior(name: str) -> Prior:
  validation.one_of("prior", name, list(PRIORS))
  return PRIORS[name]


def generate_ctr(key: jax.Array, batch: int, n: int, m: int, s: float = 1.0) -> jax.Array:
  """Draws `p` (batch, n, m) = sigmoid(a_i + b_j + s c_ij) (see module docstring)."""
  validation.positive_int("batch", batch)
  validation.positive_int("n", n)
  validation.positive_int("m", m)
  validation.non_negative("s", s)
  ka, kb, kc = jax.random.split(key, 3)
  a = -1.5 + 0.5 * jax.random.normal(ka, (batch, n, 1), jnp.float64)
  b = 0.5 * jax.random.normal(kb, (batch, 1, m), jnp.float64)
  c = jax.random.normal(kc, (batch, n, m), jnp.float64)
  return jax.nn.sigmoid(a + b + s * c)


def generate_instances(key: jax.Array, batch: int, n: int, m: int, s: float = 1.0,
                       prior: str = "uniform") -> Instances:
  """Draws a batch of instances: CTR tables (generate_ctr) and values from a named prior."""
  kp, kv = jax.random.split(key)
  p = generate_ctr(kp, batch, n, m, s)
  v = get_prior(prior).sample(kv, (batch, n))
  return Instances(p=p, v=v)


def w_from_p(p: Any) -> jax.Array:
  """MNL attraction weight reproducing the standalone CTR: w = p / (1 - p), shape kept."""
  check_probabilities("p", p, open_interval=True)
  p = jnp.asarray(p, jnp.float64)
  return p / (1.0 - p)


# ----------------------------------------------------------------------------- validation


is_concrete = validation.is_concrete


def check_probabilities(name: str, p: Any, *, open_interval: bool = False) -> None:
  """Raises ValueError unless every entry of a concrete `p` lies in [0, 1] ((0, 1) if open)."""
  if not is_concrete(p):
    return
  a = np.asarray(p, np.float64)
  ok = (a > 0) & (a < 1) if open_interval else (a >= 0) & (a <= 1)
  if a.size and not np.all(ok):
    rng = "(0, 1)" if open_interval else "[0, 1]"
    raise ValueError(f"{name} must have all entries in {rng}, found e.g. {a[~ok][:3].tolist()}")


def check_non_negative(name: str, x: Any) -> None:
  if not is_concrete(x):
    return
  a = np.asarray(x, np.float64)
  if a.size and not np.all(np.isfinite(a) & (a >= 0)):
    bad = a[~(np.isfinite(a) & (a >= 0))][:3].tolist()
    raise ValueError(f"{name} must be finite and >= 0 everywhere, found e.g. {bad}")


check_finite = validation.finite_array


def check_allocation(name: str, x: Any, table_shape: tuple[int, ...]) -> None:
  """Raises ValueError unless `x` (..., N, M) has the table's shape and (when concrete) is a
  feasible 0/1 allocation: each advertiser in at most one position and vice versa."""
  validation.shape(name, x, table_shape)
  a = validation.concrete(x)
  if a is None or not a.size:
    return
  a = a.astype(np.float64)
  if not np.all((a == 0) | (a == 1)):
    bad = a[~((a == 0) | (a == 1))][:3].tolist()
    raise ValueError(f"{name} must be a 0/1 allocation, found entries {bad}")
  if a.sum(-1).max() > 1 or a.sum(-2).max() > 1:
    raise ValueError(f"{name} is infeasible: an advertiser holds two positions or a position "
                     "two advertisers")


def check_problem(r: Any, table: Any, k: Any, *, r_name: str = "r", table_name: str = "w",
                  rank: Any = None) -> tuple[int, int, int]:
  """Checks `r` (..., N), `table` (..., N, M), `1 <= k <= M` and an optional `rank` (..., M).

  Returns (n, m, k).
  """
  t_shape = np.shape(table)
  if len(t_shape) < 2:
    raise ValueError(f"{table_name} must have shape [..., n, m], got {list(t_shape)}")
  n, m = t_shape[-2:]
  if n == 0 or m == 0:
    raise ValueError(f"{table_name} must have at least one advertiser and one position, got "
                     f"shape {list(t_shape)} (n={n}, m={m})")
  validation.shape(r_name, r, [*t_shape[:-2], n])
  check_finite(r_name, r)
  k = validation.positive_int("K", k)
  if k > m:
    raise ValueError(f"K must be at most the number of positions m={m}, got {k}")
  if rank is not None:
    validation.shape("rank", rank, [*t_shape[:-2], m])
    if is_concrete(rank):
      srt = np.sort(np.asarray(rank), axis=-1)
      if not np.array_equal(srt, np.broadcast_to(np.arange(m), srt.shape)):
        raise ValueError(f"rank must be a permutation of 0..{m - 1} along the last axis, "
                         f"got {np.asarray(rank).tolist()}")
  return n, m, k
