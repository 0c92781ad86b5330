"""The TNT benchmark's smoke configuration runs and prints every row."""

from benchmarks import tnt as bench


def test_smoke_prints_table():
  table = bench.main(["--smoke"])
  lines = table.splitlines()
  assert lines[0].startswith("| L | model")
  assert [line.split("|")[2].strip() for line in lines[2:]] == ["Titans C=8", "TNT C_L={8}",
                                                                 "Attention"]
  # Titans at C=8 is its own baseline.
  assert lines[2].rstrip(" |").endswith("| 1")
  assert float(lines[4].split("|")[6]) > 0      # planned peak MB


def test_rows_over_the_memory_limit_are_not_run():
  args = bench.parse(["--smoke", "--max_gb", "1e-9"])
  sec, count, peak = bench.step_time(bench._attention(args), args, 64)
  assert sec is None and count > 0 and peak > 1e-9 * 2**30


def test_context_parallel_tnt_rows_match_the_single_device_loss():
  """--context 2 builds TNT on a context mesh (this process has 8 fake CPU devices); the
  benchmarked step computes the same loss as the single-device model."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx
  losses = []
  for context in (1, 2):
    args = bench.parse(["--smoke", "--context", str(context)])
    model = bench.Stack(bench._tnt(args, 8, 64), args.layers, args.d_model, rngs=nnx.Rngs(0))
    layer = model.layers[0]
    assert (layer.memory.context_mesh(layer.cfg) is not None) == (context > 1)
    x = jax.random.normal(jax.random.key(1), (1, 64, args.d_model), jnp.float32)
    losses.append(float(jax.jit(lambda m, x: jnp.mean(jnp.square(m(x))))(model, x)))
  np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)


def test_breakdown_smoke_times_every_variant_against_the_baseline():
  from benchmarks import tnt_breakdown
  table = tnt_breakdown.main(["--smoke"])
  rows = [line.split("|")[1:-1] for line in table.splitlines()[2:]]
  assert [r[0].strip() for r in rows] == [
      "Titans C=8", "Titans C=16", "TNT {16}", "TNT {16} without global memory",
      "TNT {16} without Q-K projection", "TNT {16}, C_G = L"]
  assert float(rows[0][2]) == 1.0 and all(float(r[1]) > 0 for r in rows)


def test_breakdown_rejects_zero_rounds():
  import pytest

  from benchmarks import tnt_breakdown
  with pytest.raises(ValueError, match="--rounds"):
    tnt_breakdown.parse(["--rounds", "0"])
