"""tnx.sharding: mesh construction, partition rules, the shard_map call site and the
multi-host batch assembly, on the 8 fake CPU devices of tests/conftest.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from tnx import sharding


def test_make_mesh_sizes_axes_and_auto_types():
  mesh = sharding.make_mesh(fsdp=2, context=2)
  assert mesh.axis_names == sharding.AXES
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "context": 2}
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
  small = sharding.make_mesh(data=2, devices=jax.devices()[:2])
  assert dict(small.shape) == {"data": 2, "fsdp": 1, "context": 1}


@pytest.mark.parametrize("kwargs,match", [
    (dict(fsdp=3), "fsdp \\* context = 3 must divide the device count 8"),
    (dict(data=4, fsdp=4), "exceeds the 8 devices"),
    (dict(fsdp=0), "fsdp must be a positive integer, got 0"),
    (dict(data=0), "data must be a positive integer, got 0"),
    (dict(context=-2), "context must be a positive integer, got -2"),
])
def test_make_mesh_errors_name_the_argument(kwargs, match):
  with pytest.raises(ValueError, match=match):
    sharding.make_mesh(**kwargs)


def test_fsdp_spec_shards_the_largest_divisible_dimension():
  assert sharding.fsdp_spec((6, 1024), 4, min_size=16) == P(None, "fsdp")
  assert sharding.fsdp_spec((1024, 6), 4, min_size=16) == P("fsdp", None)
  assert sharding.fsdp_spec((1026, 8), 4, min_size=16) == P(None, "fsdp")  # 1026 % 4 != 0
  assert sharding.fsdp_spec((1026, 7), 4, min_size=16) == P()             # nothing divides
  assert sharding.fsdp_spec((8, 8), 4, min_size=1 << 14) == P()           # too small
  assert sharding.fsdp_spec((), 4) == P()                                  # scalar
  assert sharding.fsdp_spec((1 << 16,), 1) == P()                          # no fsdp axis


def test_tree_shardings_and_placement_keep_values():
  mesh = sharding.make_mesh(data=2, fsdp=4)
  tree = {"big": jnp.arange(64 * 32.0).reshape(64, 32), "small": jnp.ones(3)}
  shardings = sharding.tree_shardings(tree, mesh, min_size=16)
  assert shardings["big"].spec == P("fsdp", None) and shardings["small"].spec == P()
  placed = jax.device_put(tree, shardings)
  assert placed["big"].addressable_shards[0].data.shape == (16, 32)
  np.testing.assert_array_equal(placed["big"], tree["big"])


def test_data_sharding_uses_context_only_when_it_has_devices():
  assert sharding.data_sharding(sharding.make_mesh()).spec == P(("data", "fsdp"), None)
  with_cp = sharding.data_sharding(sharding.make_mesh(context=2))
  assert with_cp.spec == P(("data", "fsdp"), "context")
  assert sharding.batch_spec(True) == with_cp.spec


def test_to_global_assembles_the_process_local_batch():
  mesh = sharding.make_mesh(context=2)
  batch = {"tokens": np.arange(8 * 6).reshape(8, 6)}
  out = sharding.to_global(batch, sharding.data_sharding(mesh))
  assert out["tokens"].shape == (8, 6) and len(out["tokens"].sharding.device_set) == 8
  np.testing.assert_array_equal(out["tokens"], batch["tokens"])


def test_shard_map_sums_over_an_axis_like_the_unsharded_sum():
  mesh = sharding.make_mesh(data=4, context=2)
  x = jnp.arange(8 * 6.0).reshape(8, 6)
  f = sharding.shard_map(lambda a: jax.lax.psum(a.sum(axis=0, keepdims=True), "data"),
                         mesh=mesh, in_specs=P("data", "context"), out_specs=P(None, "context"))
  np.testing.assert_allclose(jax.jit(f)(x), x.sum(axis=0, keepdims=True))
  g = sharding.shard_map(lambda a: a * 2.0, mesh=mesh, in_specs=P("data"), out_specs=P("data"),
                         axis_names={"data"})
  np.testing.assert_allclose(jax.jit(g)(x), 2.0 * x)


def test_distributed_start_up_only_when_asked(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append(1))
  monkeypatch.delenv("TNX_DISTRIBUTED", raising=False)
  sharding.maybe_initialize_distributed()
  assert calls == []
  monkeypatch.setenv("TNX_DISTRIBUTED", "1")
  sharding.maybe_initialize_distributed()
  assert calls == [1]
