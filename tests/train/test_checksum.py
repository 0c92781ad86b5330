"""Array checksums: any single changed word is detected for every dtype, and the checksum of a
sharded array equals that of the same array on one device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from tnx.train import checksum

DTYPES = [jnp.float32, jnp.bfloat16, jnp.float64, jnp.int32, jnp.int8, jnp.uint8, jnp.bool_,
          jnp.float16, jnp.uint32]


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_single_element_change_is_detected(dtype):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.integers(0, 2, (3, 5)) if dtype == jnp.bool_ else
                  rng.normal(size=(3, 5)) * 3, dtype)
  base = checksum.checksums({"x": x})
  assert base["x"].endswith("-15")
  for i in range(3):
    for j in range(5):
      y = x.at[i, j].set(~x[i, j] if dtype == jnp.bool_ else x[i, j] + 1)
      assert checksum.mismatches({"x": y}, base) == ["x"], (i, j)
  assert checksum.mismatches({"x": x}, base) == []


def test_swapped_elements_and_names():
  x = jnp.arange(6.0)
  base = checksum.checksums({"a": {"b": x}, "c": [x, x]})
  assert sorted(base) == ["a/b", "c/0", "c/1"]
  swapped = x.at[0].set(1.0).at[1].set(0.0)    # same multiset of values, other positions
  assert checksum.mismatches({"a": {"b": swapped}, "c": [x, x]}, base) == ["a/b"]
  assert checksum.mismatches({"a": {"b": x}, "c": [x]}, base) == ["c/1"]


def test_sharded_equals_single_device():
  if jax.device_count() < 8:
    pytest.skip("needs the 8 fake CPU devices of tests/conftest.py")
  mesh = jax.make_mesh((4, 2), ("a", "b"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  x = jnp.asarray(np.random.default_rng(1).normal(size=(8, 6)), jnp.float32)
  sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec("a", "b")))
  assert len(sharded.sharding.device_set) == 8
  assert checksum.checksums({"x": sharded}) == checksum.checksums({"x": np.asarray(x)})
