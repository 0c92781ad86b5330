"""Bad input to tnx.privacy: every scale <= 0, bad budget or malformed array is a ValueError
naming the argument, and no public path releases with less noise than its accounting states."""

import math

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tnx.privacy import accounting, clustering, data, embeddings, gmm

BAD_SCALES = [0.0, -1.0, math.nan, math.inf]


@pytest.mark.parametrize("bad", BAD_SCALES)
def test_events_reject_non_positive_scales(bad):
  with pytest.raises(ValueError, match="noise_multiplier"):
    accounting.gaussian_event(bad)
  with pytest.raises(ValueError, match="scale"):
    accounting.discrete_laplace_event(bad)


@pytest.mark.parametrize("bad_delta", [0.0, 1.0, 2.0, -1e-5, math.nan])
def test_epsilon_of_rejects_bad_delta(bad_delta):
  with pytest.raises(ValueError, match="delta"):
    accounting.epsilon_of(accounting.gaussian_event(1.0), bad_delta)


def test_discrete_laplace_event_rejects_bad_count():
  with pytest.raises(ValueError, match="count"):
    accounting.discrete_laplace_event(1.0, 0)


@pytest.mark.parametrize("bad", BAD_SCALES)
def test_noise_samplers_reject_non_positive_scales(bad):
  rng = np.random.default_rng(0)
  with pytest.raises(ValueError, match="scale"):
    clustering.discrete_laplace(rng, bad, (3,))
  with pytest.raises(ValueError, match="scale"):
    clustering.discrete_laplace_std(bad)
  with pytest.raises(ValueError, match="z_eff"):
    gmm.moment_stds(bad, 1.0, "diag")
  with pytest.raises(ValueError, match="radius"):
    gmm.moment_stds(1.0, bad, "diag")
  with pytest.raises(ValueError, match="s_n"):
    gmm.noise_multiplier(bad, 1.0, 1.0, 1.0, "diag")
  with pytest.raises(ValueError, match="s_S"):
    gmm.add_moment_noise(jax.random.key(0), jnp.zeros(2), jnp.zeros((2, 3)), jnp.zeros((2, 3)),
                         (1.0, bad, 1.0), "diag")


def test_none_is_the_only_no_noise_value():
  assert clustering.discrete_laplace_std(None) == 0.0
  np.testing.assert_array_equal(clustering.discrete_laplace(np.random.default_rng(0), None, (4,)),
                                np.zeros(4))


def test_add_moment_noise_rejects_unknown_cov_type_and_bad_stds():
  args = (jax.random.key(0), jnp.zeros(2), jnp.zeros((2, 3)), jnp.zeros((2, 3)))
  with pytest.raises(ValueError, match="cov_type"):
    gmm.add_moment_noise(*args, (1.0, 1.0, 1.0), "spherical")
  with pytest.raises(ValueError, match="stds"):
    gmm.add_moment_noise(*args, (1.0, 1.0), "diag")


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_coreset_rejects_non_positive_scales(bad):
  z, y = jnp.zeros((8, 3)), jnp.zeros(8, jnp.int32)
  be = clustering.LSHCoresetBackend(max_depth=3)
  with pytest.raises(ValueError, match="count_scale"):
    be.coreset(jax.random.key(0), z, y, 1, 1.0, bad, 1.0)
  with pytest.raises(ValueError, match="sum_multiplier"):
    be.coreset(jax.random.key(0), z, y, 1, 1.0, 1.0, bad)
  with pytest.raises(ValueError, match="radius"):
    be.coreset(jax.random.key(0), z, y, 1, bad, 1.0, 1.0)


def test_lloyd_rejects_zero_multiplier():
  be = clustering.LloydBackend(np.zeros((1, 2, 3)), rounds=1)
  with pytest.raises(ValueError, match="lloyd"):
    be.fit(jax.random.key(0), jnp.zeros((4, 3)), jnp.zeros(4, jnp.int32), 1, 2, 1.0,
           {"lloyd": 0.0})


@pytest.mark.parametrize("cells", [[0, -1, 1], [0, 3, 1]])
def test_cell_moments_rejects_ids_outside_the_cells(cells):
  z = jnp.ones((3, 2)) * 0.1
  with pytest.raises(ValueError, match="cell_N"):
    gmm.cell_moments(z, jnp.asarray(cells), jnp.zeros((3, 2)), 3, "diag")


def test_cell_moments_rejects_mismatched_shapes():
  with pytest.raises(ValueError, match="cell_N"):
    gmm.cell_moments(jnp.zeros((3, 2)), jnp.zeros(2, jnp.int32), jnp.zeros((3, 2)), 3, "diag")
  with pytest.raises(ValueError, match="centres_MxD"):
    gmm.cell_moments(jnp.zeros((3, 2)), jnp.zeros(3, jnp.int32), jnp.zeros((2, 2)), 3, "diag")


def test_fit_rejects_empty_data_and_bad_radius():
  with pytest.raises(ValueError, match="z_NxD"):
    embeddings.fit_dp_gmm(jax.random.key(0), jnp.zeros((0, 3)), jnp.zeros(0, jnp.int32), 2,
                          1.0, 1e-5, 1.0)
  for bad in (0.0, -1.0, math.nan):
    with pytest.raises(ValueError, match="radius"):
      embeddings.fit_dp_gmm(jax.random.key(0), jnp.zeros((4, 3)), jnp.zeros(4, jnp.int32), 2,
                            1.0, 1e-5, bad)
  with pytest.raises(ValueError, match="radius"):
    data.check_bounded("z", jnp.zeros((2, 2)), 0.0)


@hypothesis.given(x=st.one_of(st.just(math.nan), st.just(math.inf), st.floats(-1e3, 0.0)))
@hypothesis.settings(max_examples=20, deadline=None)
def test_fit_rejects_any_invalid_epsilon(x):
  with pytest.raises(ValueError):
    embeddings.fit_dp_gmm(jax.random.key(0), jnp.zeros((4, 3)), jnp.zeros(4, jnp.int32), 1,
                          x if x != math.inf else -x, 1e-5, 1.0)


def _spy(mp, module, name, record):
  real = getattr(module, name)

  def wrapped(*args, **kwargs):
    record.append((name, args, kwargs))
    return real(*args, **kwargs)

  mp.setattr(module, name, wrapped)


@hypothesis.given(epsilon=st.floats(0.3, 8.0), log_delta=st.floats(-9.0, -4.0),
                  cov_type=st.sampled_from(gmm.COV_TYPES), seed=st.integers(0, 2**16))
@hypothesis.settings(max_examples=3, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.too_slow])
def test_release_never_has_less_noise_than_accounted(epsilon, log_delta, cov_type, seed):
  """Records the noise every mechanism actually draws in a full LSH + moments release and
  recomputes the composed epsilon from those scales with a fresh accountant."""
  delta = 10.0 ** log_delta
  z, y, _, _ = data.sphere_gmm(jax.random.key(seed), 300, 2, 2, 3, 0.8, 0.05)
  backend = clustering.LSHCoresetBackend(max_depth=4)
  calls: list = []
  with pytest.MonkeyPatch.context() as mp:
    _spy(mp, clustering, "discrete_laplace", calls)
    _spy(mp, gmm, "add_moment_noise", calls)
    rel = embeddings.fit_dp_gmm(jax.random.key(seed), z, y, 2, epsilon, delta, 1.0, backend,
                                embeddings.DPGMMConfig(k=2, cov_type=cov_type))
  count_scales = {c[1][1] for c in calls if c[0] == "discrete_laplace"}
  (stds,) = [c[1][4] for c in calls if c[0] == "add_moment_noise"]
  assert len(count_scales) == 1 and stds is not None
  (count_scale,) = count_scales
  z_eff = gmm.noise_multiplier(*stds, 1.0, cov_type)
  # The leaf sums are drawn inside `coreset` from the same budget entry.
  events = [accounting.discrete_laplace_event(count_scale, backend.max_depth + 1),
            accounting.gaussian_event(rel.budget.scales["leaf_sums"]),
            accounting.gaussian_event(z_eff)]
  spent = accounting.epsilon_of(accounting.dp_event.ComposedDpEvent(events), delta)
  assert count_scale == pytest.approx(rel.budget.scales["tree_counts"], rel=1e-12)
  assert z_eff == pytest.approx(rel.budget.scales["moments"], rel=1e-9)
  assert spent <= epsilon * (1 + 1e-3)
  assert rel.budget.epsilon <= epsilon * (1 + 1e-3)


@hypothesis.given(s_n=st.floats(0.05, 20.0), s_s=st.floats(0.05, 20.0),
                  s_q=st.floats(0.05, 20.0))
@hypothesis.settings(max_examples=10, deadline=None)
def test_moment_noise_is_at_least_its_stated_scale(s_n, s_s, s_q):
  """Chi-square lower tail at 1e-6: the drawn noise is not smaller than the stds it states."""
  from scipy import stats
  m, d = 400, 4
  n, s, q = gmm.add_moment_noise(jax.random.key(1), jnp.zeros(m), jnp.zeros((m, d)),
                                 jnp.zeros((m, d)), (s_n, s_s, s_q), "diag")
  for x, sigma in ((n, s_n), (s, s_s), (q, s_q)):
    x = np.asarray(x).ravel()
    assert np.sum(x ** 2) / sigma ** 2 > stats.chi2.ppf(1e-6, x.size)
