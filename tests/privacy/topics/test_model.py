"""Type mixture: closed-form marginals against Monte Carlo frequencies of its own sampler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tnx.privacy.topics import api, model

T, W, K, O = 3, 3, 5, 12
N_MC = 200_000


@pytest.fixture(scope="module")
def mixture():
  return model.TypeMixture(1.5 * jax.random.normal(jax.random.PRNGKey(0), (T, W, K, O)))


@pytest.fixture(scope="module")
def monte_carlo(mixture):
  slots, types = model.sample_slots(jax.random.PRNGKey(1), mixture, N_MC, chunk_users=N_MC)
  x = np.asarray(jax.nn.one_hot(slots, O, dtype=jnp.float32).max(axis=-2))   # [N, W, O]
  freq = {"single": x.mean(0), "within": np.einsum("nwa,nwb->wab", x, x) / N_MC}
  for lag in (1, 2):
    freq[f"lag{lag}"] = np.einsum("nwa,nwb->wab", x[:, :-lag], x[:, lag:]) / N_MC
  return freq, types


def test_types_uniform(monte_carlo):
  _, types = monte_carlo
  counts = np.bincount(types, minlength=T)
  se = np.sqrt(N_MC * (1 / T) * (1 - 1 / T))
  assert np.all(np.abs(counts - N_MC / T) < 4 * se)


@pytest.mark.parametrize("table", ["single", "within", "lag1", "lag2"])
def test_closed_form_equals_monte_carlo(mixture, monte_carlo, table):
  exact = np.asarray(model.marginal_tables(mixture, lags=(1, 2))[table])
  mc = monte_carlo[0][table]
  se = np.sqrt(exact * (1 - exact) / N_MC)
  z = (mc - exact) / np.maximum(se, 1e-12)
  assert np.max(np.abs(z)) < 5.0
  # The standard errors are the right size (not just a loose bound): mean z^2 ~ 1.
  assert 0.7 < np.mean(z ** 2) < 1.3


def test_pair_marginals_match_tables(mixture):
  tables = model.marginal_tables(mixture, lags=(1, 2))
  rng = np.random.default_rng(0)
  weeks = rng.integers(0, W, (500, 2))
  topics = rng.integers(0, O, (500, 2))
  got = np.asarray(model.pair_marginals(mixture, jnp.asarray(weeks), jnp.asarray(topics)))
  w0, w1, a, b = weeks[:, 0], weeks[:, 1], topics[:, 0], topics[:, 1]
  want = np.empty(500)
  for i in range(500):
    if w0[i] == w1[i]:
      want[i] = tables["within"][w0[i], a[i], b[i]]
    else:
      lo, hi, ta, tb = (w0[i], w1[i], a[i], b[i]) if w0[i] < w1[i] else (w1[i], w0[i], b[i], a[i])
      want[i] = tables[f"lag{hi - lo}"][lo, ta, tb]
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_identities(mixture):
  # sum over pairs a < b of P(a, b in S) = E[C(|S|, 2)] <= C(K, 2); sum of P(a in S) = E|S|.
  tables = model.marginal_tables(mixture)
  within = np.asarray(tables["within"])
  pairs = (within.sum(axis=(1, 2)) - np.trace(within, axis1=1, axis2=2)) / 2
  sizes = np.asarray(tables["single"]).sum(-1)
  assert np.all(pairs <= 10 + 1e-9) and np.all(sizes <= 5 + 1e-9)
  # Given the type, weeks are independent: sum of lag-1 pairs = mean_t E|S_w| E|S_w+1|.
  lag = np.asarray(tables["lag1"]).sum(axis=(1, 2))
  per_type = np.stack([np.asarray(model.marginal_tables(
      model.TypeMixture(mixture.logits_TxWxKxO[t:t + 1]))["single"]).sum(-1) for t in range(T)])
  np.testing.assert_allclose(lag, np.mean(per_type[:, :-1] * per_type[:, 1:], axis=0),
                             rtol=1e-10)


def test_one_hot_type_is_deterministic():
  # A type whose slots put all mass on topics 0..4 yields exactly those sets.
  logits = jnp.full((1, 2, K, O), -1e4).at[0, :, jnp.arange(K), jnp.arange(K)].set(0.0)
  mix = model.TypeMixture(logits)
  slots, _ = model.sample_slots(jax.random.PRNGKey(0), mix, 100)
  assert np.all(slots == np.arange(K)[None, None, :])
  tables = model.marginal_tables(mix)
  np.testing.assert_allclose(np.asarray(tables["single"])[0, :K], 1.0)


def test_inverse_cdf_clips_rounding_to_last_topic():
  cdf = jnp.array([0.5, 0.9, 0.999999])        # last entry below 1 after rounding
  row = jnp.zeros(4, jnp.int32)
  u = jnp.array([0.0, 0.5, 0.95, 0.9999995])
  got = model._bisect(cdf, row, u, 3)
  np.testing.assert_array_equal(np.asarray(got), [0, 1, 2, 2])


def test_dedup_gives_distinct_sets(mixture):
  slots, _ = model.sample_slots(jax.random.PRNGKey(3), mixture, 1000)
  sets = np.asarray(api.dedup_slots(slots))
  api.check_sets("sets", sets, O)      # raises on a repeated topic
  assert np.all((sets >= 0).sum(-1) == np.array([[len(set(w)) for w in u] for u in slots]))


def test_init_mixture_validates():
  with pytest.raises(ValueError, match="std"):
    model.init_mixture(jax.random.PRNGKey(0), 2, 2, 5, 4, std=0.0)
  with pytest.raises(ValueError, match="num_types"):
    model.init_mixture(jax.random.PRNGKey(0), 0, 2, 5, 4)
