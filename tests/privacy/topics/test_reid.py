"""Re-identification attack: weights, chance level, and scores against a brute-force loop."""

import jax
import numpy as np
import pytest

from tnx.privacy.topics import api, reid


def test_attack_weights_favour_matches():
  cfg = api.APIConfig(num_topics=30)
  rng = np.random.default_rng(0)
  site1 = rng.integers(0, 10, (500, 3))           # topics 0..9 popular, the rest rare
  log_a, log_b = reid.attack_weights(site1, cfg)
  shown = np.unique(site1)
  assert np.all(log_a[shown] > log_b[shown])
  np.testing.assert_allclose(log_a[20:], np.log(cfg.q_out))   # never seen: pi = 0
  np.testing.assert_allclose(log_b[20:], np.log(cfg.q_out))


def test_all_random_topics_give_chance():
  cfg = api.APIConfig(num_topics=12, random_topic_prob=1.0)
  rng = np.random.default_rng(1)
  n = 50
  s1, s2 = rng.integers(0, 12, (n, 4)), rng.integers(0, 12, (n, 4))
  rates = reid.reidentification_rates(jax.random.PRNGKey(0), s1, s2, cfg)
  np.testing.assert_allclose(rates, 1.0 / n)


def _brute_force(s1, s2, log_a, log_b, queries):
  n, r = s1.shape
  out = np.zeros(r)
  for q in queries:
    for epochs in range(1, r + 1):
      score = np.zeros(n)
      for v in range(n):
        for e in range(epochs):
          t = s2[q, e]
          score[v] += log_a[t] if s1[v, e] == t else log_b[t]
      best = np.isclose(score, score.max(), rtol=0, atol=1e-12)
      out[epochs - 1] += best[q] / best.sum()
  return out / len(queries)


def test_rates_match_brute_force():
  cfg = api.APIConfig(num_topics=8, top_k=3)
  rng = np.random.default_rng(2)
  n, r = 40, 3
  sets = np.stack([rng.permutation(8)[:3] for _ in range(n * r)]).reshape(n, r, 3)
  shown = np.asarray(api.site_topics(jax.random.PRNGKey(3), sets, 2, cfg))
  key = jax.random.PRNGKey(4)
  rates = reid.reidentification_rates(key, shown[0], shown[1], cfg, num_queries=25, chunk=8)
  queries = np.asarray(jax.random.choice(key, n, (25,), replace=False))
  log_a, log_b = reid.attack_weights(shown[0], cfg)
  np.testing.assert_allclose(rates, _brute_force(shown[0], shown[1], log_a, log_b, queries),
                             atol=1e-12)
  assert rates[-1] > rates[0] > 1.0 / n           # more epochs, more risk; above chance


def test_validation():
  cfg = api.APIConfig(num_topics=5, top_k=2)
  with pytest.raises(ValueError, match="shape"):
    reid.reidentification_rates(jax.random.PRNGKey(0), np.zeros((3, 2), int),
                                np.zeros((3, 3), int), cfg)
  with pytest.raises(ValueError, match="site2 traces"):
    reid.reidentification_rates(jax.random.PRNGKey(0), np.zeros((3, 2), int),
                                np.full((3, 2), 9), cfg)
