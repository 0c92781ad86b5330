"""tnx.kmeans: k-means++ seeding and weighted Lloyd against scikit-learn and planted clusters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import cluster as sk_cluster
from sklearn import metrics

from tnx import kmeans


def _blobs(seed=0, n_per=60, k=4, d=3, spread=0.3, sep=6.0):
  rng = np.random.default_rng(seed)
  means = rng.normal(size=(k, d)) * sep
  x = np.concatenate([m + spread * rng.normal(size=(n_per, d)) for m in means])
  return x, np.repeat(np.arange(k), n_per)


def test_lloyd_matches_sklearn_inertia_and_centres_on_fixed_init():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(300, 4))           # overlapping: many Lloyd steps before convergence
  w = rng.uniform(0.2, 3.0, size=300)
  init = x[rng.choice(300, 6, replace=False)]
  for iters in (2, 300):
    sk = sk_cluster.KMeans(6, init=init, n_init=1, max_iter=iters, tol=0.0,
                           algorithm="lloyd").fit(x, sample_weight=w)
    ours = kmeans.lloyd(jnp.asarray(x), jnp.asarray(init), jnp.asarray(w), num_iters=iters)
    np.testing.assert_allclose(float(ours.inertia), sk.inertia_, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(ours.centres_KxD), sk.cluster_centers_, rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_array_equal(np.asarray(ours.labels_N), sk.labels_)
  assert int(ours.num_iters) == sk.n_iter_


def test_lloyd_objective_non_increasing():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(400, 2)))
  w = jnp.asarray(rng.uniform(0.5, 2.0, size=400))
  c0 = kmeans.kmeans_plusplus(jax.random.key(0), x, 8, w)
  res = kmeans.lloyd(x, c0, w, num_iters=50)
  hist = np.asarray(res.inertia_I)
  assert np.all(np.isfinite(hist))
  assert np.all(np.diff(hist) <= 1e-9 * hist[0])
  assert hist[-1] < hist[0]                       # it actually moved
  np.testing.assert_allclose(float(res.inertia), float(kmeans.inertia(x, res.centres_KxD, w)))
  assert float(res.inertia) <= hist[0]


def test_kmeans_recovers_planted_clusters_and_is_deterministic():
  x, truth = _blobs()
  a = kmeans.kmeans(jax.random.key(3), jnp.asarray(x), 4, num_iters=100)
  b = kmeans.kmeans(jax.random.key(3), jnp.asarray(x), 4, num_iters=100)
  assert metrics.adjusted_rand_score(truth, np.asarray(a.labels_N)) > 0.95
  np.testing.assert_array_equal(np.asarray(a.centres_KxD), np.asarray(b.centres_KxD))


def test_plusplus_weighted_seeding():
  x, _ = _blobs(n_per=30)
  w = np.ones(len(x))
  w[:30] = 0.0                                    # the first blob carries no weight
  for s in range(5):
    c = np.asarray(kmeans.kmeans_plusplus(jax.random.key(s), jnp.asarray(x), 3, jnp.asarray(w)))
    rows = [int(np.argmin(np.linalg.norm(x - ci, axis=1))) for ci in c]
    assert all(r >= 30 for r in rows)             # never a weight-0 point
    assert len({r // 30 for r in rows}) == 3      # one seed per remaining blob
  # A point of weight 5 counts as 5 copies: seeding/Lloyd inertia equals the repeated data.
  rng = np.random.default_rng(4)
  x2 = rng.normal(size=(20, 2))
  counts = rng.integers(1, 4, size=20)
  c0 = x2[:5]
  wres = kmeans.lloyd(jnp.asarray(x2), jnp.asarray(c0), jnp.asarray(counts, float))
  rres = kmeans.lloyd(jnp.asarray(np.repeat(x2, counts, 0)), jnp.asarray(c0))
  np.testing.assert_allclose(float(wres.inertia), float(rres.inertia), rtol=1e-10)


def test_empty_cluster_relocated():
  x = jnp.asarray([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [10.1, 0.0]])
  init = jnp.asarray([[0.05, 0.0], [10.05, 0.0], [100.0, 100.0]])   # third owns nothing
  res = kmeans.lloyd(x, init, num_iters=10)
  assert len(set(np.asarray(res.labels_N).tolist())) == 3
  assert np.all(np.isfinite(np.asarray(res.centres_KxD)))


def test_sharded_equals_unsharded():
  from tnx import sharding
  x, _ = _blobs(n_per=60, k=4)              # the shapes of the planted-cluster test
  mesh = sharding.make_mesh()
  xs = jax.device_put(jnp.asarray(x), sharding.named(mesh, "data"))
  c0 = jnp.asarray(x[::60])
  a = kmeans.lloyd(jnp.asarray(x), c0)
  b = kmeans.lloyd(xs, c0)
  np.testing.assert_allclose(np.asarray(a.centres_KxD), np.asarray(b.centres_KxD), rtol=1e-12)


def test_invalid_arguments():
  x = jnp.ones((5, 2))
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="k"):
    kmeans.kmeans(key, x, 0)
  with pytest.raises(ValueError, match="k = 6"):
    kmeans.kmeans(key, x, 6)
  with pytest.raises(ValueError, match="weights_N"):
    kmeans.kmeans(key, x, 2, jnp.asarray([1.0, -1, 1, 1, 1]))
  with pytest.raises(ValueError, match="k = 3"):
    kmeans.kmeans(key, x, 3, jnp.asarray([1.0, 1, 0, 0, 0]))
  with pytest.raises(ValueError, match="x_NxD"):
    kmeans.kmeans(key, x.at[0, 0].set(jnp.nan), 2)
  with pytest.raises(ValueError, match="init_centres_KxD"):
    kmeans.lloyd(x, jnp.ones((2, 3)))
  with pytest.raises(ValueError, match="num_iters"):
    kmeans.lloyd(x, jnp.ones((2, 2)), num_iters=0)
