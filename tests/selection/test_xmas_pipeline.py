"""XMAS end to end: select() on a tiny model and pool; streaming, sharding, determinism,
ablation hooks and argument errors."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from tnx import sharding as shd
from tnx.selection.xmas import data, model, pipeline, spectral, trajectory

CFG = pipeline.XMASConfig(num_clusters=4, batch_size=8, kmeans_iters=20)


@pytest.fixture(scope="module")
def setup():
  dcfg = data.ShapesVQAConfig(image_dim=8)
  vcfg = model.for_shapes_vqa(dcfg, d_model=16, n_layers=2, n_heads=2)
  graphdef = None
  checkpoints = []
  for seed in range(3):      # three parameter settings of one model stand in for checkpoints
    g, params, rest = model.init(vcfg, seed)
    graphdef = graphdef or g
    checkpoints.append((params, rest))
  pool = data.generate(0, 50, dcfg)
  values = trajectory.trajectory_values(graphdef, checkpoints, pool, CFG.extract())
  return graphdef, checkpoints, pool, values


def test_streaming_and_sharding_do_not_change_values(setup):
  graphdef, checkpoints, pool, values = setup
  n = len(pool["tokens"])
  assert values.shape == (n, 3, 5) and n % 8 != 0        # a padded last batch
  one_batch = trajectory.trajectory_values(
      graphdef, checkpoints[:1], pool, trajectory.ExtractConfig(batch_size=n))
  np.testing.assert_allclose(one_batch[:, 0], values[:, 0], rtol=1e-5, atol=1e-6)
  mesh = shd.make_mesh()
  assert mesh.shape[shd.DATA] == 8
  sharded = trajectory.trajectory_values(graphdef, checkpoints, pool, CFG.extract(),
                                         mesh=mesh)
  np.testing.assert_allclose(sharded, values, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="batch_size"):
    trajectory.data_sharding(mesh, 12)


def test_select_end_to_end(setup):
  graphdef, checkpoints, pool, values = setup
  n = len(pool["tokens"])
  sel = pipeline.select(jax.random.key(0), graphdef, checkpoints, pool, 0.3, CFG)
  assert len(sel.indices) == int(0.3 * n)
  np.testing.assert_allclose(sel.values_NxTxK, values)
  np.testing.assert_allclose(sel.trajectories_NxT, values.sum(-1))
  np.testing.assert_allclose(sel.stability_N, spectral.stability(values.sum(-1)))
  text_only = ~pool["has_image"]
  assert text_only.any()
  assert np.all(sel.labels_N[text_only] == CFG.num_clusters)     # their own cluster
  assert np.all(sel.labels_N[~text_only] < CFG.num_clusters)
  again = pipeline.select_from_values(jax.random.key(0), values, pool["has_image"], 0.3, CFG)
  np.testing.assert_array_equal(again.indices, sel.indices)        # deterministic
  np.testing.assert_array_equal(again.labels_N, sel.labels_N)


def test_ablation_variants(setup):
  _, _, pool, values = setup
  n = len(pool["tokens"])
  key = jax.random.key(1)
  for cfg in (dataclasses.replace(CFG, within="random"),
              dataclasses.replace(CFG, within="unstable"),
              dataclasses.replace(CFG, trajectory="values", top_k=1)):
    sel = pipeline.select_from_values(key, values, pool["has_image"], 12, cfg)
    assert len(sel.indices) == 12 and len(np.unique(sel.indices)) == 12
  last = pipeline.select_from_values(key, values[:, -1:], pool["has_image"], 12, CFG)
  np.testing.assert_array_equal(last.stability_N, np.zeros(n))   # one checkpoint: TV = 0


def test_argument_errors(setup):
  graphdef, checkpoints, pool, values = setup
  key = jax.random.key(0)
  n = len(pool["tokens"])
  with pytest.raises(ValueError, match="budget"):
    pipeline.select(key, graphdef, checkpoints, pool, n + 1, CFG)
  with pytest.raises(ValueError, match="budget"):
    pipeline.select_from_values(key, values, pool["has_image"], 1.2, CFG)
  with pytest.raises(ValueError, match="top_k"):
    pipeline.XMASConfig(top_k=0)
  with pytest.raises(ValueError, match="num_clusters"):
    pipeline.XMASConfig(num_clusters=-1)
  with pytest.raises(ValueError, match="num_clusters"):
    pipeline.select_from_values(key, values, pool["has_image"], 5,
                                pipeline.XMASConfig(num_clusters=n + 1))
  bad = [checkpoints[0], (checkpoints[1][0], {"extra": np.zeros(2)})]
  with pytest.raises(ValueError, match="checkpoints"):
    pipeline.select(key, graphdef, bad, pool, 5, CFG)
  p0 = nnx.to_pure_dict(checkpoints[0][0])
  p1 = jax.tree.map(lambda a: np.zeros(a.shape + (1,), a.dtype), p0)
  with pytest.raises(ValueError, match=r"checkpoints\[1\]"):
    trajectory.check_checkpoints([(p0,), (p1,)])
  with pytest.raises(ValueError, match="checkpoints"):
    trajectory.check_checkpoints([])
  with pytest.raises(ValueError, match="token_mask"):
    pipeline.select(key, graphdef, checkpoints, {k: v for k, v in pool.items()
                                                 if k != "token_mask"}, 5, CFG)
