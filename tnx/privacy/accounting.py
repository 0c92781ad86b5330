"""Privacy accounting for the DP clustering / DP mixture pipeline, on top of `dp_accounting`.

Every mechanism in `tnx.privacy` is described by a `dp_accounting` `DpEvent`; a release made of
several mechanisms is split into named `Part`s, each owning a fraction of the (epsilon, delta)
budget, and calibrated with `calibrate_split`. The neighbouring relation is add/remove one
record (`ADD_OR_REMOVE_ONE`) throughout.

Calibration is done in two stages:
  1. each part alone is calibrated to (fraction * epsilon, fraction * delta), which fixes the
     ratio between the parts' noise levels (the explicit split);
  2. one common factor t <= 1 multiplies every part's noise scale, chosen so that the PLD
     accountant's epsilon of the *composed* event equals the target at the full delta. Because
     composition under PLD is tighter than the basic sum, t < 1 and no budget is wasted.
The reported budget is always recomputed by a fresh accountant on the final composed event.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import dp_accounting
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from tnx import validation

RELATION = "add_or_remove_one"


def noise_scale(name: str, scale: float | None) -> float | None:
  """Validates a noise scale: a finite number > 0, or None for the explicit non-private limit.

  Zero, negative and NaN scales are errors: no number ever means "no noise".
  """
  return None if scale is None else validation.positive(name, scale)
# Calibration runs with a coarser PLD grid (pessimistic, so the epsilon it sees is an upper
# bound of the fine one); the final report uses the fine grid, hence reported <= target.
_CALIBRATION_GRID = 1e-3
_REPORT_GRID = 1e-4


def check_budget(epsilon: float, delta: float) -> tuple[float, float]:
  """Validates a privacy budget: epsilon in (0, inf] (inf = no noise), delta in (0, 1)."""
  eps = float(epsilon)
  if math.isnan(eps) or eps <= 0:
    raise ValueError(f"epsilon must be > 0 (math.inf for the non-private limit), got {epsilon!r}")
  dlt = validation.in_range("delta", delta, 0.0, 1.0, low_open=True, high_open=True)
  return eps, dlt


def make_accountant(kind: str = "pld", grid: float = _REPORT_GRID
                    ) -> dp_accounting.PrivacyAccountant:
  """A fresh add/remove accountant: 'pld' (tight, default) or 'rdp' (cross-check)."""
  validation.one_of("accountant", kind, ("pld", "rdp"))
  if kind == "pld":
    return pld_privacy_accountant.PLDAccountant(value_discretization_interval=grid)
  return rdp_privacy_accountant.RdpAccountant()


def epsilon_of(event: dp_event.DpEvent, delta: float, kind: str = "pld",
               grid: float = _REPORT_GRID) -> float:
  """Epsilon of `event` at `delta` in (0, 1) under a fresh accountant of the given kind."""
  delta = validation.in_range("delta", delta, 0.0, 1.0, low_open=True, high_open=True)
  return float(make_accountant(kind, grid).compose(event).get_epsilon(delta))


def gaussian_event(noise_multiplier: float) -> dp_event.DpEvent:
  """Gaussian mechanism with noise std = noise_multiplier * (L2 sensitivity); multiplier > 0."""
  return dp_event.GaussianDpEvent(validation.positive("noise_multiplier", noise_multiplier))


def discrete_laplace_event(scale: float, count: int = 1) -> dp_event.DpEvent:
  """`count` adaptive releases of sensitivity-1 integer counts with DLap(1 / scale) noise.

  `scale` is the inverse of dp_accounting's discrete Laplace parameter `a` (pmf proportional
  to exp(-a |x|)), so that larger scale means more noise like the other events; scale > 0.
  """
  scale = validation.positive("scale", scale)
  count = validation.positive_int("count", count)
  inner = dp_event.DiscreteLaplaceDpEvent(noise_parameter=1.0 / scale, sensitivity=1)
  return inner if count == 1 else dp_event.SelfComposedDpEvent(inner, count)


@dataclasses.dataclass(frozen=True)
class Part:
  """One mechanism of a release: `make_event(scale)` must get more private as scale grows."""
  name: str
  fraction: float
  make_event: Callable[[float], dp_event.DpEvent]


@dataclasses.dataclass(frozen=True)
class Budget:
  """The privacy spent by a release.

  Attributes:
    epsilon: accountant epsilon of the composed event at `delta` (inf if no noise was added).
    delta: the delta it is reported at.
    relation: neighbouring relation of the guarantee.
    accountant: which dp_accounting accountant produced `epsilon`.
    scales: final noise scale of each part (the value passed to its `make_event`); `None` for
      every part in the non-private limit epsilon = inf, where no noise is added. A number is
      always > 0: no scale ever stands for "no noise".
    part_epsilons: each part's own epsilon at fraction * delta (informational).
    event: the composed DpEvent (None in the non-private limit).
  """
  epsilon: float
  delta: float
  relation: str
  accountant: str
  scales: dict[str, float | None]
  part_epsilons: dict[str, float]
  event: dp_event.DpEvent | None


def _bracket(gap: Callable[[float], float], start: float
             ) -> dp_accounting.ExplicitBracketInterval:
  """Doubles/halves from `start` until gap (epsilon minus target, decreasing) changes sign.

  Starting near the answer matters: tiny noise scales make PLD construction slow.
  """
  lo = hi = start
  if gap(start) > 0:
    while gap(hi) > 0:
      lo, hi = hi, 2.0 * hi
      if hi > 1e9:
        raise ValueError("no noise scale below 1e9 meets the privacy target")
  else:
    while gap(lo) <= 0:
      hi, lo = lo, 0.5 * lo
      if lo < 1e-9:
        raise ValueError("privacy target is met by every noise scale above 1e-9")
  return dp_accounting.ExplicitBracketInterval(lo, hi)


def _calibrate(make_event: Callable[[float], dp_event.DpEvent], epsilon: float,
               delta: float, start: float = 1.0) -> float:
  def gap(scale: float) -> float:
    return epsilon_of(make_event(scale), delta, "pld", _CALIBRATION_GRID) - epsilon

  return float(dp_accounting.calibrate_dp_mechanism(
      lambda: make_accountant("pld", _CALIBRATION_GRID), make_event, epsilon, delta,
      _bracket(gap, start), tol=1e-4 * start))


def calibrate_split(parts: Sequence[Part], epsilon: float, delta: float) -> Budget:
  """Calibrates the noise scales of `parts` to a total (epsilon, delta), see module docstring.

  Args:
    parts: mechanisms composed (adaptively) in one release; fractions must be > 0, sum to 1.
    epsilon: total epsilon in (0, inf]; inf returns `None` scales (the non-private limit).
    delta: total delta in (0, 1).

  Returns:
    A `Budget` whose `scales[name]` are the noise scales to use and whose `epsilon` is the
    PLD epsilon of the final composed event (<= epsilon up to the accountant's tolerance).
  """
  epsilon, delta = check_budget(epsilon, delta)
  if not parts:
    raise ValueError("parts must name at least one mechanism, got an empty sequence")
  fractions = [validation.in_range(f"fraction of part {p.name!r}", p.fraction, 0.0, 1.0,
                                   low_open=True) for p in parts]
  if abs(sum(fractions) - 1.0) > 1e-9:
    raise ValueError(f"part fractions must sum to 1, got {fractions} (sum {sum(fractions)})")
  names = [p.name for p in parts]
  if len(set(names)) != len(names):
    raise ValueError(f"part names must be unique, got {names}")
  if math.isinf(epsilon):
    return Budget(math.inf, delta, RELATION, "none", {n: None for n in names},
                  {n: math.inf for n in names}, None)

  base = [_calibrate(p.make_event, f * epsilon, f * delta) for p, f in zip(parts, fractions)]

  def composed(t: float) -> dp_event.DpEvent:
    return dp_event.ComposedDpEvent([p.make_event(s * t) for p, s in zip(parts, base)])

  t = 1.0
  if len(parts) > 1:
    t = _calibrate(composed, epsilon, delta, start=1.0)
  scales = {p.name: s * t for p, s in zip(parts, base)}
  part_eps = {p.name: epsilon_of(p.make_event(scales[p.name]), f * delta)
              for p, f in zip(parts, fractions)}
  event = composed(t)
  return Budget(epsilon_of(event, delta), delta, RELATION, "pld", scales, part_eps, event)
