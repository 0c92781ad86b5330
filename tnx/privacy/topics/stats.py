"""Single-topic, within-week and across-week pair statistics and their user-level DP release.

Statistics (arXiv 2506.23855, Sec. 4.1), for N users with weekly sets S_1(u), ..., S_W(u):

  q_within(a, b) = 1/(N W)     sum_u sum_w      1[a in S_w(u), b in S_w(u)],   a < b,
  q_across(a, b) = 1/(N (W-1)) sum_u sum_{w<W}  1[a in S_w(u), b in S_{w+1}(u)] (ordered),
  q_single(a)    = 1/(N W)     sum_u sum_w      1[a in S_w(u)].

With complete sets of k topics, q_within sums to C(k, 2) and q_across to k^2.

Privacy (the paper's mechanism is not public; this is our design, documented in
docs/privacy.md). The unit is one user with all W weeks (user-level DP, add/remove one user).
*Contribution bounding*: a user's contribution is its week-averaged indicator vector, so with at
most k topics a week its L2 norm is <= sqrt(C(k,2)) (within), <= k (across) and <= sqrt(k)
(single), whatever W; W is a public constant. The summed vectors over the *whole* public domain
(every pair of the taxonomy, no data-dependent selection) get one Gaussian mechanism with joint
sensitivity Delta = sqrt(C(k,2) + k^2 [+ k]) and std sigma = z * Delta on every cell; the user
count N, needed to normalise, gets discrete Laplace noise. The two are composed and calibrated
with `tnx.privacy.accounting` (PLD), which also reports the spent (epsilon, delta).
By default q_single is derived from the noisy within table, q_single(a) = sum_b q_within(a, b)
/ (k - 1) (post-processing, exact for complete sets, as the paper's code does); with
`release_single` it is a third noisy table inside the same Gaussian mechanism.
Everything downstream of `NoisyRelease` (clamping, thresholds, the fit, sampling) is
post-processing. Noise is drawn in floating point (no discretised sampler).

Dimension letters: N users, W weeks, K slots, O topics.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from tnx import validation
from tnx.privacy import accounting
from tnx.privacy.topics import api


@dataclasses.dataclass(frozen=True)
class TopicStatistics:
  """Frequencies: single_O [O], within_OxO [O, O] (upper triangle a < b, zero elsewhere),
  across_OxO [O, O] (row: week w topic, column: week w + 1 topic)."""
  single_O: np.ndarray
  within_OxO: np.ndarray
  across_OxO: np.ndarray

  @property
  def num_topics(self) -> int:
    return self.single_O.shape[0]


@functools.partial(jax.jit, static_argnames=("num_topics", "block"))
def contribution_sums(sets_NxWxK: jax.Array, num_topics: int, block: int = 2048
                      ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Sums over users of the week-averaged indicator contributions (exact, in blocks of users).

  Returns (single [O], within [O, O] upper triangle, across [O, O]).
  """
  n, w, _ = sets_NxWxK.shape
  pad = (-n) % block
  sets = jnp.pad(sets_NxWxK, ((0, pad), (0, 0), (0, 0)), constant_values=api.EMPTY)
  dtype = jnp.zeros(()).dtype       # float64 under jax_enable_x64

  def one_block(carry, s_BxWxK):
    x = jnp.max(jax.nn.one_hot(s_BxWxK, num_topics, dtype=dtype), axis=-2)   # [B, W, O]
    single = carry[0] + jnp.sum(x, axis=(0, 1)) / w
    within = carry[1] + jnp.einsum("bwi,bwj->ij", x, x) / w
    across = carry[2] + jnp.einsum("bwi,bwj->ij", x[:, :-1], x[:, 1:]) / (w - 1)
    return (single, within, across), None

  zeros = (jnp.zeros((num_topics,), dtype), jnp.zeros((num_topics, num_topics), dtype),
           jnp.zeros((num_topics, num_topics), dtype))
  blocks = sets.reshape(-1, block, *sets.shape[1:])
  (single, within, across), _ = jax.lax.scan(one_block, zeros, blocks)
  return single, jnp.triu(within, 1), across


def _checked(sets_NxWxK, num_topics: int) -> np.ndarray:
  s = api.check_sets("sets", sets_NxWxK, num_topics)
  if s.shape[1] < 2:
    raise ValueError(f"sets must span at least 2 weeks for across-week pairs, got {s.shape[1]}")
  return s


def exact_statistics(sets_NxWxK, num_topics: int) -> TopicStatistics:
  """The non-private frequencies of a population."""
  s = _checked(sets_NxWxK, num_topics)
  single, within, across = contribution_sums(jnp.asarray(s), num_topics)
  n = s.shape[0]
  return TopicStatistics(np.asarray(single) / n, np.asarray(within) / n, np.asarray(across) / n)


def sensitivity(top_k: int, release_single: bool = False) -> float:
  """Joint L2 sensitivity of the (within, across[, single]) contribution sums."""
  return math.sqrt(math.comb(top_k, 2) + top_k ** 2 + (top_k if release_single else 0))


@dataclasses.dataclass(frozen=True)
class ReleaseConfig:
  epsilon: float = 1.0              # total epsilon in (0, inf]; inf = exact statistics
  delta: float = 1e-6               # total delta in (0, 1)
  count_fraction: float = 0.02      # budget share of the noisy user count
  release_single: bool = False      # noisy single-topic table (else derived from within)

  def __post_init__(self):
    accounting.check_budget(self.epsilon, self.delta)
    validation.in_range("count_fraction", self.count_fraction, 0.0, 1.0, low_open=True,
                        high_open=True)


@dataclasses.dataclass(frozen=True)
class NoisyRelease:
  """The released noisy sums (before any post-processing) and their accounting.

  within_OxO (upper triangle), across_OxO, single_O (None unless released) are the noisy
  contribution sums; count the noisy number of users. pair_sigma is the Gaussian std on every
  cell, count_scale the discrete-Laplace scale (1 / a) on the count, both 0 only when
  budget.epsilon is inf.
  """
  within_OxO: np.ndarray
  across_OxO: np.ndarray
  single_O: np.ndarray | None
  count: float
  pair_sigma: float
  count_scale: float
  sensitivity: float
  top_k: int
  budget: accounting.Budget

  def frequencies(self, threshold_sigmas: float = 0.0) -> TopicStatistics:
    """Post-processing: clamp at 0, optionally zero cells below threshold_sigmas * sigma,
    divide by the noisy count, derive q_single from q_within unless it was released."""
    threshold_sigmas = validation.non_negative("threshold_sigmas", threshold_sigmas)
    tau = threshold_sigmas * self.pair_sigma
    clean = lambda c: np.where(c > tau, c, 0.0)
    n = max(self.count, 1.0)
    within = np.triu(clean(self.within_OxO), 1) / n
    across = clean(self.across_OxO) / n
    if self.single_O is None:
      single = (within.sum(0) + within.sum(1)) / (self.top_k - 1)
    else:
      single = clean(self.single_O) / n
    return TopicStatistics(single, within, across)


def _event(noise_multiplier: float, count_scale: float):
  return accounting.dp_event.ComposedDpEvent([accounting.gaussian_event(noise_multiplier),
                                              accounting.discrete_laplace_event(count_scale)])


@functools.lru_cache(maxsize=64)
def plan_budget(epsilon: float, delta: float, count_fraction: float) -> accounting.Budget:
  """Calibrates (noise multiplier of the pair tables, count scale) to (epsilon, delta).

  Depends on public settings only, hence cached.
  """
  parts = [accounting.Part("pairs", 1.0 - count_fraction, accounting.gaussian_event),
           accounting.Part("count", count_fraction, accounting.discrete_laplace_event)]
  return accounting.calibrate_split(parts, epsilon, delta)


def _discrete_laplace(key: jax.Array, scale: float) -> int:
  # DLap(a), pmf ~ exp(-a |x|): difference of two geometrics with success 1 - exp(-a).
  p = -math.expm1(-1.0 / scale)
  g = jax.random.geometric(key, p, (2,))
  return int(g[0]) - int(g[1])


def release_at_scale(key: jax.Array, sets_NxWxK, num_topics: int, pair_sigma: float,
                     count_scale: float, delta: float, *, release_single: bool = False
                     ) -> NoisyRelease:
  """Releases the statistics with the given noise and reports the (epsilon, delta) it spends.

  Args:
    key: PRNG key (fresh noise for every table).
    sets_NxWxK: [N, W, K] weekly sets (topic indices, -1 empty), K = k.
    num_topics: O.
    pair_sigma: Gaussian std on every cell of the summed tables (count units), > 0.
    count_scale: discrete-Laplace scale 1 / a of the user count, > 0.
    delta: the delta at which epsilon is reported, in (0, 1).
    release_single: add a noisy single-topic table (else q_single is derived).

  Returns:
    the `NoisyRelease`; its budget.epsilon is a fresh PLD accountant's epsilon of the composed
    event (Gaussian with multiplier pair_sigma / Delta, discrete Laplace on the count).
  """
  pair_sigma = validation.positive("pair_sigma", pair_sigma)
  count_scale = validation.positive("count_scale", count_scale)
  delta = validation.in_range("delta", delta, 0.0, 1.0, low_open=True, high_open=True)
  s = _checked(sets_NxWxK, num_topics)
  k = s.shape[2]
  sens = sensitivity(k, release_single)
  z = pair_sigma / sens
  event = _event(z, count_scale)
  eps = accounting.epsilon_of(event, delta)
  budget = accounting.Budget(eps, delta, accounting.RELATION, "pld",
                             {"pairs": z, "count": count_scale}, {}, event)
  return _noisy(key, s, num_topics, pair_sigma, count_scale, sens, release_single, budget)


def _noisy(key, s, num_topics, sigma, count_scale, sens, release_single, budget
           ) -> NoisyRelease:
  single, within, across = (np.asarray(t) for t in contribution_sums(jnp.asarray(s),
                                                                       num_topics))
  count = float(s.shape[0])
  if sigma > 0:
    k_w, k_a, k_s, k_n = jax.random.split(key, 4)
    gauss = lambda k, shape: sigma * np.asarray(jax.random.normal(k, shape, within.dtype))
    within = np.triu(within + gauss(k_w, within.shape), 1)   # every pair a < b gets noise
    across = across + gauss(k_a, across.shape)
    single = single + gauss(k_s, single.shape)
    count += _discrete_laplace(k_n, count_scale)
  return NoisyRelease(within, across, single if release_single else None, count, sigma,
                      count_scale, sens, s.shape[2], budget)


def release(key: jax.Array, sets_NxWxK, num_topics: int, cfg: ReleaseConfig) -> NoisyRelease:
  """User-level (epsilon, delta)-DP release of the pair statistics (see module docstring).

  epsilon = inf returns the exact sums (pair_sigma = 0, budget.epsilon = inf).
  """
  s = _checked(sets_NxWxK, num_topics)
  k = s.shape[2]
  sens = sensitivity(k, cfg.release_single)
  budget = plan_budget(float(cfg.epsilon), float(cfg.delta), float(cfg.count_fraction))
  if math.isinf(budget.epsilon):
    return _noisy(key, s, num_topics, 0.0, 0.0, sens, cfg.release_single, budget)
  z, count_scale = budget.scales["pairs"], budget.scales["count"]
  return _noisy(key, s, num_topics, z * sens, count_scale, sens, cfg.release_single, budget)
