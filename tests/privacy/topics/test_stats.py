"""Pair statistics and their DP release: exactness, sensitivity, noise scale and accounting."""

import itertools
import math

import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from tnx.privacy.topics import stats

O = 20


def _random_sets(rng, n, w=3, k=5, o=O, holes=0.1):
  sets = np.stack([rng.permutation(o)[:k] for _ in range(n * w)]).reshape(n, w, k)
  hole = rng.random(sets.shape) < holes
  hole[:, 0, 0] = False                           # every user keeps a topic
  return np.where(hole, -1, sets)


def _brute_force(sets, o):
  n, w, _ = sets.shape
  single, within, across = np.zeros(o), np.zeros((o, o)), np.zeros((o, o))
  for u in range(n):
    weeks = [set(t for t in sets[u, r] if t >= 0) for r in range(w)]
    for r, s in enumerate(weeks):
      for a in s:
        single[a] += 1 / (n * w)
      for a, b in itertools.combinations(sorted(s), 2):
        within[a, b] += 1 / (n * w)
      if r + 1 < w:
        for a, b in itertools.product(s, weeks[r + 1]):
          across[a, b] += 1 / (n * (w - 1))
  return single, within, across


def test_exact_statistics_match_brute_force():
  sets = _random_sets(np.random.default_rng(0), 60)
  got = stats.exact_statistics(sets, O)
  single, within, across = _brute_force(sets, O)
  np.testing.assert_allclose(got.single_O, single, atol=1e-12)
  np.testing.assert_allclose(got.within_OxO, within, atol=1e-12)
  np.testing.assert_allclose(got.across_OxO, across, atol=1e-12)


def test_complete_sets_sum_to_pair_counts():
  got = stats.exact_statistics(_random_sets(np.random.default_rng(1), 50, holes=0.0), O)
  assert got.within_OxO.sum() == pytest.approx(10.0)
  assert got.across_OxO.sum() == pytest.approx(25.0)
  assert got.single_O.sum() == pytest.approx(5.0)


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(seed=st.integers(0, 2 ** 31 - 1), w=st.sampled_from([2, 4]),
                  holes=st.floats(0.0, 0.6))
def test_one_user_changes_the_sums_by_at_most_the_sensitivity(seed, w, holes):
  sets = _random_sets(np.random.default_rng(seed), 10, w=w, holes=holes)
  removed = sets.copy()
  removed[0] = -1                                 # user 0 absent (contributes nothing)
  full = [np.asarray(x) for x in stats.contribution_sums(sets, O)]
  less = [np.asarray(x) for x in stats.contribution_sums(removed, O)]
  d_single, d_within, d_across = (np.linalg.norm(a - b) for a, b in zip(full, less))
  assert d_within <= math.sqrt(10) + 1e-9
  assert d_across <= 5 + 1e-9
  assert d_single <= math.sqrt(5) + 1e-9
  joint = math.sqrt(d_within ** 2 + d_across ** 2)
  assert joint <= stats.sensitivity(5) + 1e-9
  assert math.sqrt(joint ** 2 + d_single ** 2) <= stats.sensitivity(5, True) + 1e-9


def _fresh_epsilon(z, count_scale, delta, kind="pld"):
  event = dp_event.ComposedDpEvent([
      dp_event.GaussianDpEvent(z),
      dp_event.DiscreteLaplaceDpEvent(noise_parameter=1 / count_scale, sensitivity=1)])
  acc = (pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4) if kind == "pld"
         else rdp_privacy_accountant.RdpAccountant())
  return acc.compose(event).get_epsilon(delta)


@pytest.mark.parametrize("eps", [1.0, 4.0])
def test_noise_scale_and_reported_epsilon(eps):
  sets = _random_sets(np.random.default_rng(2), 200, holes=0.0)
  cfg = stats.ReleaseConfig(epsilon=eps, delta=1e-6)
  rel = stats.release(jax.random.PRNGKey(0), sets, O, cfg)
  exact = [np.asarray(x) for x in stats.contribution_sums(sets, O)]
  iu = np.triu_indices(O, 1)
  noise = np.concatenate([(rel.within_OxO - exact[1])[iu], (rel.across_OxO - exact[2]).ravel()])
  # Empirical std of 590 cells against the stated sigma (relative SE ~ 3 %).
  assert np.std(noise) == pytest.approx(rel.pair_sigma, rel=0.12)
  assert abs(np.mean(noise)) < 4 * rel.pair_sigma / math.sqrt(noise.size)
  z = rel.pair_sigma / rel.sensitivity
  assert rel.sensitivity == pytest.approx(math.sqrt(35))
  fresh = _fresh_epsilon(z, rel.count_scale, 1e-6)
  assert rel.budget.epsilon == pytest.approx(fresh, rel=1e-3)
  assert fresh <= eps * (1 + 1e-3)
  assert fresh == pytest.approx(eps, rel=0.02)                # the budget is not wasted
  # Cross-check of the Gaussian part alone with a second accountant (RDP: looser, close).
  gauss_pld = pld_privacy_accountant.PLDAccountant().compose(dp_event.GaussianDpEvent(z))
  gauss_rdp = rdp_privacy_accountant.RdpAccountant().compose(dp_event.GaussianDpEvent(z))
  e_pld, e_rdp = gauss_pld.get_epsilon(1e-6), gauss_rdp.get_epsilon(1e-6)
  assert e_pld <= e_rdp <= 1.5 * e_pld
  assert abs(rel.count - 200) < 30 * rel.count_scale


def test_release_at_scale_reports_accountant_epsilon():
  sets = _random_sets(np.random.default_rng(3), 30)
  rel = stats.release_at_scale(jax.random.PRNGKey(1), sets, O, pair_sigma=20.0,
                               count_scale=10.0, delta=1e-5)
  want = _fresh_epsilon(20.0 / math.sqrt(35), 10.0, 1e-5)
  assert rel.budget.epsilon == pytest.approx(want, rel=1e-3)
  assert rel.pair_sigma == 20.0


def test_infinite_epsilon_is_exact():
  sets = _random_sets(np.random.default_rng(4), 40)
  rel = stats.release(jax.random.PRNGKey(0), sets, O, stats.ReleaseConfig(epsilon=math.inf))
  exact = stats.exact_statistics(sets, O)
  got = rel.frequencies()
  assert rel.pair_sigma == 0.0 and math.isinf(rel.budget.epsilon) and rel.count == 40
  np.testing.assert_allclose(got.within_OxO, exact.within_OxO, atol=1e-12)
  np.testing.assert_allclose(got.across_OxO, exact.across_OxO, atol=1e-12)


def test_frequencies_post_processing():
  sets = _random_sets(np.random.default_rng(5), 100, holes=0.0)
  rel = stats.release(jax.random.PRNGKey(3), sets, O, stats.ReleaseConfig(epsilon=1.0))
  f = rel.frequencies()
  assert np.all(f.within_OxO >= 0) and np.all(f.across_OxO >= 0)
  assert np.all(np.tril(f.within_OxO) == 0)
  np.testing.assert_allclose(f.single_O, (f.within_OxO.sum(0) + f.within_OxO.sum(1)) / 4)
  sparse = rel.frequencies(threshold_sigmas=2.0)
  assert np.count_nonzero(sparse.across_OxO) < np.count_nonzero(f.across_OxO)


@pytest.mark.parametrize("eps, delta", [(0.0, 1e-6), (-1.0, 1e-6), (1.0, 0.0), (1.0, 1.0),
                                        (1.0, -1e-3), (float("nan"), 1e-6)])
def test_bad_budget_raises(eps, delta):
  with pytest.raises(ValueError, match="epsilon|delta"):
    stats.ReleaseConfig(epsilon=eps, delta=delta)


def test_bad_noise_scale_and_users_raise():
  sets = _random_sets(np.random.default_rng(6), 5)
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match="pair_sigma"):
    stats.release_at_scale(key, sets, O, pair_sigma=0.0, count_scale=1.0, delta=1e-6)
  with pytest.raises(ValueError, match="count_scale"):
    stats.release_at_scale(key, sets, O, pair_sigma=1.0, count_scale=-2.0, delta=1e-6)
  with pytest.raises(ValueError, match="delta"):
    stats.release_at_scale(key, sets, O, pair_sigma=1.0, count_scale=1.0, delta=1.0)
  with pytest.raises(ValueError, match="count_fraction"):
    stats.ReleaseConfig(count_fraction=0.0)
  bad = sets.copy()
  bad[2] = -1
  with pytest.raises(ValueError, match="sets: users \\[2\\] have no topics"):
    stats.release(key, bad, O, stats.ReleaseConfig())
  with pytest.raises(ValueError, match="sets: users"):
    stats.exact_statistics(bad, O)


@hypothesis.settings(max_examples=8, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.too_slow])
@hypothesis.given(seed=st.integers(0, 2 ** 31 - 1), n=st.just(30),
                  eps=st.sampled_from([0.5, 1.0, 4.0]), delta=st.sampled_from([1e-6, 1e-5]),
                  single=st.booleans(), explicit=st.booleans(),
                  sigma=st.floats(0.5, 50.0))
def test_no_release_has_less_noise_than_its_accounting_states(seed, n, eps, delta, single,
                                                              explicit, sigma):
  """Whatever the path, (released - exact) has the stated std on every cell, and the stated
  noise gives at most the reported epsilon under an independent accountant."""
  rng = np.random.default_rng(seed)
  sets = _random_sets(rng, n, holes=float(rng.uniform(0, 0.5)))
  key = jax.random.PRNGKey(seed)
  if explicit:
    rel = stats.release_at_scale(key, sets, O, sigma, 5.0, delta, release_single=single)
  else:
    rel = stats.release(key, sets, O, stats.ReleaseConfig(eps, delta, release_single=single))
    assert rel.budget.epsilon <= eps * (1 + 1e-3)
  exact = [np.asarray(x) for x in stats.contribution_sums(sets, O)]
  iu = np.triu_indices(O, 1)
  cells = [(rel.within_OxO - exact[1])[iu], (rel.across_OxO - exact[2]).ravel()]
  if single:
    cells.append(rel.single_O - exact[0])
  noise = np.concatenate(cells)
  assert np.all(noise != 0)                                   # every cell is noised
  assert np.std(noise) >= 0.85 * rel.pair_sigma
  # The stated sensitivity bounds every user's contribution.
  for u in range(min(n, 5)):
    parts = [np.asarray(x) for x in stats.contribution_sums(sets[u:u + 1], O)]
    norm2 = sum(np.sum(p ** 2) for p in parts[1:]) + (np.sum(parts[0] ** 2) if single else 0)
    assert math.sqrt(norm2) <= rel.sensitivity + 1e-9
  fresh = _fresh_epsilon(rel.pair_sigma / rel.sensitivity, rel.count_scale, delta)
  assert fresh <= rel.budget.epsilon * (1 + 1e-3)
