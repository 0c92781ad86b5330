"""Moment matching: query construction, and recovery of a known mixture's statistics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tnx.privacy.topics import fit, model
from tnx.privacy.topics.stats import TopicStatistics

W, K, O = 3, 5, 16


def _stationary_truth(num_types, seed=0):
  """A mixture whose types use the same slot logits every week (stationary statistics)."""
  logits = 1.5 * jax.random.normal(jax.random.PRNGKey(seed), (num_types, 1, K, O))
  return model.TypeMixture(jnp.repeat(logits, W, axis=1))


def _statistics(mixture):
  tables = model.marginal_tables(mixture, lags=(1, 2))
  within = np.triu(np.asarray(tables["within"]).mean(0), 1)
  return (TopicStatistics(np.asarray(tables["single"]).mean(0), within,
                          np.asarray(tables["lag1"]).mean(0)),
          np.asarray(tables["lag2"]).mean(0))


def test_build_queries_counts_and_targets():
  rng = np.random.default_rng(0)
  s = TopicStatistics(rng.random(O), np.triu(rng.random((O, O)), 1), rng.random((O, O)))
  q = fit.build_queries(s, W)
  assert len(q) == O * W + math.comb(O, 2) * W + O * O * (W - 1)
  same = q.weeks_Qx2[:, 0] == q.weeks_Qx2[:, 1]
  a, b = q.topics_Qx2[:, 0], q.topics_Qx2[:, 1]
  single = same & (a == b)
  np.testing.assert_allclose(q.targets_Q[single], np.tile(s.single_O, W), rtol=1e-6)
  within = same & (a != b)
  assert np.all(a[within] < b[within])
  np.testing.assert_allclose(q.targets_Q[within], s.within_OxO[a[within], b[within]], rtol=1e-6)
  across = ~same
  assert np.all(q.weeks_Qx2[across, 1] == q.weeks_Qx2[across, 0] + 1)
  np.testing.assert_allclose(q.targets_Q[across], s.across_OxO[a[across], b[across]], rtol=1e-6)
  with pytest.raises(ValueError, match="num_weeks"):
    fit.build_queries(s, 1)


def test_fit_recovers_noiseless_statistics_of_a_known_mixture():
  truth = _stationary_truth(num_types=2)
  stats, lag2 = _statistics(truth)
  cfg = fit.FitConfig(num_types=3, num_slots=K, batch_size=4096, num_epochs=2000,
                      learning_rate=0.05, init_std=0.5, dtype="float64")
  res = fit.fit_mixture(stats, W, cfg, epochs_per_call=1000)
  queries = fit.build_queries(stats, W, dtype=np.float64)
  assert fit.query_loss(res.mixture, queries) < 1e-6
  assert res.epoch_losses[-1] < 1e-3 * res.epoch_losses[0]
  got, got_lag2 = _statistics(res.mixture)
  np.testing.assert_allclose(got.single_O, stats.single_O, atol=3e-3)
  np.testing.assert_allclose(got.within_OxO, stats.within_OxO, atol=3e-3)
  np.testing.assert_allclose(got.across_OxO, stats.across_OxO, atol=3e-3)
  # Held-out lag-2 pairs were never fitted: the model class, not just the optimiser, matches.
  # Baseline: independent weeks (product of single-topic rates) misses them by far more.
  err = np.abs(got_lag2 - lag2).max()
  baseline = np.abs(np.outer(stats.single_O, stats.single_O) - lag2).max()
  assert err < 0.03 and err < 0.25 * baseline


def test_family_weights_zero_ignores_a_family():
  truth = _stationary_truth(num_types=1, seed=1)
  stats, _ = _statistics(truth)
  broken = TopicStatistics(stats.single_O, stats.within_OxO, np.full((O, O), 0.9))
  q = fit.build_queries(broken, W, (1.0, 1.0, 0.0), np.float64)
  assert np.all(q.weights_Q[q.weeks_Qx2[:, 0] != q.weeks_Qx2[:, 1]] == 0)
  assert fit.query_loss(truth, q) < 1e-24          # the wrong across targets do not count
  assert fit.query_loss(truth, fit.build_queries(broken, W, dtype=np.float64)) > 1e-2


def test_fit_config_validation():
  with pytest.raises(ValueError, match="learning_rate"):
    fit.FitConfig(learning_rate=0.0)
  with pytest.raises(ValueError, match="init_std"):
    fit.FitConfig(init_std=-1.0)
  with pytest.raises(ValueError, match="num_types"):
    fit.FitConfig(num_types=0)


def test_spec_defaults():
  cfg = fit.FitConfig()
  assert (cfg.num_types, cfg.batch_size, cfg.num_epochs, cfg.learning_rate, cfg.init_std,
          cfg.seed) == (500, 8192, 2000, 1.0, 0.001, 0)
