"""End-to-end DP mixture: input checks, recovery, post-processing, sharding, back-ends."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize
from sklearn import mixture as sk_mixture

from tnx import sharding
from tnx.privacy import classifier, clustering, data, embeddings, gmm


def _matched_error(est_KxD, truth_KxD):
  cost = np.linalg.norm(np.asarray(est_KxD)[:, None] - truth_KxD[None], axis=-1)
  r, c = optimize.linear_sum_assignment(cost)
  return cost[r, c].mean()


@pytest.fixture(scope="module")
def small():
  z, y, _, truth = data.sphere_gmm(jax.random.key(0), 3000, 2, 3, 6, 0.8, 0.05)
  return z, y, truth


def test_input_validation(small):
  z, y, _ = small
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="radius"):
    embeddings.fit_dp_gmm(key, 2.0 * z, y, 2, 1.0, 1e-5, 1.0)        # unclipped
  with pytest.raises(ValueError, match="finite"):
    embeddings.fit_dp_gmm(key, z.at[0, 0].set(jnp.nan), y, 2, 1.0, 1e-5, 1.0)
  with pytest.raises(ValueError, match="epsilon"):
    embeddings.fit_dp_gmm(key, z, y, 2, 0.0, 1e-5, 1.0)
  with pytest.raises(ValueError, match="epsilon"):
    embeddings.fit_dp_gmm(key, z, y, 2, -2.0, 1e-5, 1.0)
  for bad_delta in (0.0, 1.0, 2.0):
    with pytest.raises(ValueError, match="delta"):
      embeddings.fit_dp_gmm(key, z, y, 2, 1.0, bad_delta, 1.0)
  with pytest.raises(ValueError, match="y_N"):
    embeddings.fit_dp_gmm(key, z, y + 5, 2, 1.0, 1e-5, 1.0)
  with pytest.raises(ValueError, match="cov_type"):
    embeddings.fit_dp_gmm(key, z, y, 2, 1.0, 1e-5, 1.0, config=embeddings.DPGMMConfig(
        cov_type="tied"))


def test_clip_rows_bounds_and_zeroes_nan():
  x = jnp.array([[3.0, 4.0], [0.0, 0.0], [jnp.nan, 1.0], [0.1, 0.2]])
  c = np.asarray(data.clip_rows(x, 1.0))
  assert np.all(np.linalg.norm(c, axis=1) <= 1.0 + 1e-12)
  np.testing.assert_allclose(c[0], [0.6, 0.8])
  np.testing.assert_array_equal(c[2], [0.0, 0.0])
  np.testing.assert_allclose(c[3], [0.1, 0.2])
  data.check_bounded("c", c, 1.0)


def test_means_recovered_as_n_grows():
  # Error of well-separated means must shrink with n; at n = 12k it is within a few times
  # the sampling + DP prediction sigma sqrt(d/n_j) + R sqrt(d log(1/delta)) / (eps n_j).
  errs = {}
  for n in (1000, 12000):
    z, y, _, truth = data.sphere_gmm(jax.random.key(n), n, 1, 3, 6, 0.8, 0.05)
    rel = embeddings.fit_dp_gmm(jax.random.key(1), z, y, 1, 1.0, 1e-5, 1.0,
                                clustering.LSHCoresetBackend(max_depth=10),
                                embeddings.DPGMMConfig(k=3))
    errs[n] = _matched_error(rel.mixture.means_CxKxD[0], truth.means_CxKxD[0])
  nj = 12000 / 3
  predicted = 0.05 * math.sqrt(6 / nj) + math.sqrt(6 * math.log(1e5)) / nj
  assert errs[12000] < errs[1000]
  assert errs[12000] < 5 * predicted, (errs, predicted)


def test_nonprivate_limit_matches_sklearn_gmm(small):
  z, y, truth = small
  rel = embeddings.fit_dp_gmm(jax.random.key(0), z, y, 2, math.inf, 1e-5, 1.0,
                              clustering.KMeansBackend(), embeddings.DPGMMConfig(k=3))
  assert math.isinf(rel.budget.epsilon) and rel.stds is None
  z_np, y_np = np.asarray(z), np.asarray(y)
  for c in range(2):
    ref = sk_mixture.GaussianMixture(3, covariance_type="diag", random_state=0).fit(
        z_np[y_np == c]).means_
    # Both estimate the same well-separated means: agree to sampling error (~0.05/sqrt(500)).
    assert _matched_error(rel.mixture.means_CxKxD[c], ref) < 5e-3


@pytest.mark.parametrize("cov_type", ["full", "diag", "iso"])
def test_mixture_is_valid_and_dropped_cells_not_sampled(small, cov_type):
  z, y, _ = small
  cfg = embeddings.DPGMMConfig(k=5, cov_type=cov_type)   # more cells than true components
  rel = embeddings.fit_dp_gmm(jax.random.key(2), z, y, 2, 0.5, 1e-5, 1.0,
                              clustering.LSHCoresetBackend(max_depth=8), cfg)
  mix = rel.mixture
  w = np.array(mix.weights_CxK)
  assert np.all(w >= 0)
  np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-12)
  np.testing.assert_allclose(np.asarray(mix.class_weights_C).sum(), 1.0, atol=1e-12)
  cov = np.asarray(mix.cov)
  if cov_type == "full":
    np.testing.assert_allclose(cov, np.swapaxes(cov, -1, -2), atol=1e-12)
    assert np.linalg.eigvalsh(cov).min() >= 1e-6 * (1 - 1e-6)
  else:
    assert cov.min() >= 1e-6 * (1 - 1e-6)
  # Force one cell to weight 0 and put its mean far away: no sample may come from it.
  w[0, 0] = 0.0
  w[0] /= w[0].sum()
  means = np.asarray(mix.means_CxKxD).copy()
  means[0, 0] = 50.0
  forced = gmm.Mixture(jnp.asarray(w), mix.class_weights_C, jnp.asarray(means), mix.cov,
                       cov_type)
  zs, ys = gmm.sample(jax.random.key(0), forced, 4000, renormalize=False)
  assert np.abs(np.asarray(zs)).max() < 20.0
  assert set(np.unique(np.asarray(ys))) <= {0, 1}


def test_determinism(small):
  z, y, _ = small
  be = clustering.LSHCoresetBackend(max_depth=8)
  cfg = embeddings.DPGMMConfig(k=3)
  a = embeddings.synthetic_embeddings(jax.random.key(5), z, y, 2, 500, 2.0, 1e-5, 1.0, be, cfg)
  b = embeddings.synthetic_embeddings(jax.random.key(5), z, y, 2, 500, 2.0, 1e-5, 1.0, be, cfg)
  c = embeddings.synthetic_embeddings(jax.random.key(6), z, y, 2, 500, 2.0, 1e-5, 1.0, be, cfg)
  np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
  assert not np.allclose(np.asarray(a[0]), np.asarray(c[0]))
  assert a[2].epsilon <= 2.0 * (1 + 1e-6)


def test_sharded_statistics_equal_unsharded(small):
  z, y, _ = small
  mesh = sharding.make_mesh(data=8)
  zs = jax.device_put(z[:2992], sharding.named(mesh, "data", None))
  ys = jax.device_put(y[:2992], sharding.named(mesh, "data"))
  centres = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 6)) * 0.3)
  cell_s = ys * 3 + clustering.assign(zs, ys, centres)
  cell_u = y[:2992] * 3 + clustering.assign(z[:2992], y[:2992], centres)
  np.testing.assert_array_equal(np.asarray(cell_s), np.asarray(cell_u))
  for cov_type in gmm.COV_TYPES:
    got = gmm.cell_moments(zs, cell_s, centres.reshape(6, 6), 6, cov_type)
    want = gmm.cell_moments(z[:2992], cell_u, centres.reshape(6, 6), 6, cov_type)
    for g, w in zip(got, want):
      np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-12, atol=1e-12)


def test_assign_matches_brute_force(small):
  z, y, _ = small
  centres = np.random.default_rng(1).normal(size=(2, 4, 6))
  got = np.asarray(clustering.assign(z, y, jnp.asarray(centres)))
  zn, yn = np.asarray(z), np.asarray(y)
  want = [np.argmin(np.linalg.norm(centres[yn[i]] - zn[i], axis=1)) for i in range(len(yn))]
  np.testing.assert_array_equal(got, want)


def test_noise_free_lsh_coreset_conserves_mass(small):
  z, y, _ = small
  cs = clustering.LSHCoresetBackend(max_depth=12).coreset(jax.random.key(0), z, y, 2, 1.0,
                                                          None, None)
  yn, zn = np.asarray(y), np.asarray(z)
  for c in range(2):
    sel = cs.class_M == c
    assert cs.weights_M[sel].sum() == (yn == c).sum()          # every point in one leaf
    np.testing.assert_allclose((cs.points_MxD[sel] * cs.weights_M[sel, None]).sum(0),
                               zn[yn == c].sum(0), atol=1e-9)


def test_noise_free_lloyd_matches_reference(small):
  z, y, _ = small
  init = np.random.default_rng(3).normal(size=(2, 3, 6))
  init *= 0.5 / np.linalg.norm(init, axis=-1, keepdims=True)    # inside the R-ball
  be = clustering.LloydBackend(init, rounds=3)
  got = be.fit(jax.random.key(0), z, y, 2, 3, 1.0, {"lloyd": None})
  zn, yn = np.asarray(z), np.asarray(y)
  for c in range(2):
    cen = init[c].copy()
    pts = zn[yn == c]
    for _ in range(3):
      a = np.argmin(((pts[:, None] - cen[None]) ** 2).sum(-1), 1)
      for j in range(3):
        if (a == j).sum() >= 1:
          cen[j] = pts[a == j].mean(0)
    np.testing.assert_allclose(got[c], cen, atol=1e-9)


def test_probe_learns_separable_embeddings(small):
  z, y, _ = small
  model = classifier.train_probe(z, y, 2, hidden=64, config=classifier.TrainConfig(epochs=20))
  assert classifier.accuracy(model, z, y) > 0.95
