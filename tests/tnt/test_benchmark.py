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
