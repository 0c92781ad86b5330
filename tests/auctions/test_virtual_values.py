"""Score maps: closed-form virtual values, ironing, generalised inverse."""

import numpy as np
import pytest

from tnx import auctions as au


@pytest.mark.parametrize("name", ["uniform", "exponential"])
def test_regular_priors_match_closed_form(name):
  prior = au.get_prior(name)
  v = np.linspace(0.0, 3.0 if name == "exponential" else 1.0, 301)[1:-1]
  got = np.asarray(au.apply_map(au.ironed_virtual_value_map(name), v))
  np.testing.assert_allclose(got, prior.virtual_value(v), atol=2e-4)
  unironed = np.asarray(au.apply_map(au.ironed_virtual_value_map(name, iron=False), v))
  np.testing.assert_allclose(unironed, got, atol=2e-4)  # regular: ironing changes nothing


def test_irregular_prior_is_ironed_monotone_and_matches_phi_off_intervals():
  prior = au.get_prior("bimodal")
  smap = au.ironed_virtual_value_map(prior)
  v = np.concatenate([np.linspace(0.001, 0.3, 300), np.linspace(0.7, 0.999, 300)])
  phibar = np.asarray(au.apply_map(smap, v))
  assert np.all(np.diff(phibar) >= -1e-12)
  phi = prior.virtual_value(v)
  # phi increases on each cluster, but the gap (virtual value -inf inside) forces ironing.
  assert np.max(np.abs(phibar - phi)) > 0.1
  # Closed form of the ironed interval: the hull is tangent to the lower branch at
  # q = 0.3 + sqrt(0.28) ... (solve q^2 - 0.6 q - 0.19 = 0), i.e. value 0.3 (1 - q) / 0.7.
  q_t = (0.6 + np.sqrt(0.36 + 0.76)) / 2.0
  v_t = 0.3 * (1.0 - q_t) / 0.7
  off = (v < v_t - 1e-3) | (v > 0.7 + 1e-3)
  np.testing.assert_allclose(phibar[off], phi[off], atol=2e-4)
  flat = (v > v_t + 1e-3) & (v < 0.3)
  np.testing.assert_allclose(phibar[flat], (3.0 / 7.0) * (1.0 - 2.0 * q_t), atol=1e-6)
  assert float(au.monopoly_reserve(smap)) == pytest.approx(0.7, abs=1e-3)


@pytest.mark.parametrize("kind", ["identity", "uniform", "bimodal", "reserve"])
def test_generalised_inverse(kind):
  smap = {"identity": au.identity_map(), "uniform": au.ironed_virtual_value_map("uniform"),
          "bimodal": au.ironed_virtual_value_map("bimodal"),
          "reserve": au.reserve_map(0.4)}[kind]
  t = np.linspace(-0.5, 1.2, 171)
  b = np.asarray(au.inverse_map(smap, t))
  assert np.all(b >= 0) and np.all(np.diff(b) >= -1e-12)
  # Maps may contain near-vertical ramps (steps), so test with small bid offsets.
  g_above = np.asarray(au.apply_map(smap, b + 1e-8))
  assert np.all(g_above >= t - 1e-9)  # reaches the threshold...
  g_below = np.asarray(au.apply_map(smap, np.maximum(b - 1e-6, 0.0)))
  assert np.all((g_below < t) | (b == 0))  # ...and no smaller bid does
