"""Accounting: budget checks, calibration against closed forms and independent accountants."""

import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant
from scipy import stats

from tnx.privacy import accounting, clustering, embeddings


@pytest.mark.parametrize("eps, delta", [(0.0, 1e-5), (-1.0, 1e-5), (float("nan"), 1e-5),
                                        (1.0, 0.0), (1.0, 1.0), (1.0, -0.1), (1.0, 1.5)])
def test_bad_budget_raises(eps, delta):
  with pytest.raises(ValueError):
    accounting.check_budget(eps, delta)
  with pytest.raises(ValueError):
    accounting.calibrate_split([accounting.Part("g", 1.0, accounting.gaussian_event)],
                               eps, delta)


def test_bad_parts_raise():
  g = accounting.gaussian_event
  with pytest.raises(ValueError, match="sum to 1"):
    accounting.calibrate_split([accounting.Part("a", 0.5, g), accounting.Part("b", 0.4, g)],
                               1.0, 1e-5)
  with pytest.raises(ValueError, match="unique"):
    accounting.calibrate_split([accounting.Part("a", 0.5, g), accounting.Part("a", 0.5, g)],
                               1.0, 1e-5)


@pytest.mark.parametrize("eps, delta, sigma_ref", [(1.0, 1e-6, 4.23), (4.0, 1e-6, 1.19)])
def test_single_gaussian_matches_analytic(eps, delta, sigma_ref):
  b = accounting.calibrate_split([accounting.Part("g", 1.0, accounting.gaussian_event)],
                                 eps, delta)
  exact = dp_accounting.get_sigma_gaussian(eps, delta)   # Balle & Wang closed form
  assert b.scales["g"] == pytest.approx(exact, rel=2e-3)
  assert b.scales["g"] == pytest.approx(sigma_ref, abs=0.01)
  assert b.epsilon <= eps * (1 + 1e-6)


def test_gaussian_pld_matches_gdp_closed_form():
  # A Gaussian mechanism with multiplier z is mu-GDP with mu = 1/z (Dong, Roth, Su).
  z, eps = 3.0, 1.0
  mu = 1 / z
  delta_gdp = (stats.norm.cdf(-eps / mu + mu / 2)
               - math.exp(eps) * stats.norm.cdf(-eps / mu - mu / 2))
  pld = pld_privacy_accountant.PLDAccountant().compose(accounting.gaussian_event(z))
  assert pld.get_delta(eps) == pytest.approx(delta_gdp, rel=1e-2)


def test_split_report_equals_independent_accountant():
  eps, delta = 2.0, 1e-5
  backend = clustering.LSHCoresetBackend(max_depth=6)
  cfg = embeddings.DPGMMConfig(k=3, clustering_fraction=0.4)
  b = embeddings.plan_budget(backend, cfg, eps, delta)
  # Rebuild the composition by hand from the released noise parameters.
  event = dp_event.ComposedDpEvent([
      dp_event.SelfComposedDpEvent(dp_event.DiscreteLaplaceDpEvent(
          1.0 / b.scales["tree_counts"], 1), 7),
      dp_event.GaussianDpEvent(b.scales["leaf_sums"]),
      dp_event.GaussianDpEvent(b.scales["moments"])])
  ref = pld_privacy_accountant.PLDAccountant().compose(event).get_epsilon(delta)
  assert b.epsilon == pytest.approx(ref, rel=1e-9)
  assert 0.97 * eps <= b.epsilon <= eps * (1 + 1e-6)   # the budget is used, not exceeded
  # RDP is a looser, independent bound: it must not be below the tight PLD value.
  rdp = rdp_privacy_accountant.RdpAccountant().compose(
      dp_event.ComposedDpEvent([dp_event.GaussianDpEvent(b.scales["leaf_sums"]),
                                dp_event.GaussianDpEvent(b.scales["moments"])])).get_epsilon(delta)
  pld_g = accounting.epsilon_of(dp_event.ComposedDpEvent([
      dp_event.GaussianDpEvent(b.scales["leaf_sums"]),
      dp_event.GaussianDpEvent(b.scales["moments"])]), delta)
  assert rdp >= pld_g * 0.999
  # The explicit split: the ratio of part epsilons follows the fractions' order.
  assert b.part_epsilons["moments"] > b.part_epsilons["leaf_sums"]


def test_lloyd_and_prototype_events():
  eps, delta = 1.0, 1e-5
  be = clustering.LloydBackend(np.zeros((2, 3, 4)), rounds=4)
  b = embeddings.plan_budget(be, embeddings.DPGMMConfig(k=3), eps, delta)
  ref = pld_privacy_accountant.PLDAccountant().compose(dp_event.ComposedDpEvent([
      dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(b.scales["lloyd"]), 4),
      dp_event.GaussianDpEvent(b.scales["moments"])])).get_epsilon(delta)
  assert b.epsilon == pytest.approx(ref, rel=1e-9)
  # K = 1: no clustering, the whole budget goes to one Gaussian release.
  b1 = embeddings.plan_budget(be, embeddings.DPGMMConfig(k=1), eps, delta)
  assert set(b1.scales) == {"moments"}
  assert b1.scales["moments"] == pytest.approx(dp_accounting.get_sigma_gaussian(eps, delta),
                                               rel=2e-3)


def test_nonprivate_backend_needs_infinite_epsilon():
  with pytest.raises(ValueError, match="epsilon=inf"):
    embeddings.plan_budget(clustering.KMeansBackend(), embeddings.DPGMMConfig(), 1.0, 1e-5)
  b = embeddings.plan_budget(clustering.KMeansBackend(), embeddings.DPGMMConfig(), math.inf,
                             1e-5)
  assert math.isinf(b.epsilon) and all(s is None for s in b.scales.values())
