"""Titans layouts (LMM, MAL, MAG, MAC) around a Titans memory and the ATLAS MAG/MAL hybrids:
prefill + decode and decode from scratch equal the parallel forward; causality."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tnx.memory.atlas import AtlasConfig, AtlasMixer
from tnx.memory.titans import TitansConfig, TitansMemory
from tnx.models.titans_layouts import TitansLayout

F64 = jnp.float64
D = 8
X = jax.random.normal(jax.random.key(1), (2, 9, D), F64)


def _titans():
  cfg = TitansConfig(num_heads=2, chunk_size=3, lr_max=0.05, dtype=F64, param_dtype=F64)
  return TitansMemory(D, cfg, rngs=nnx.Rngs(0))


def _atlas(**kw):
  cfg = AtlasConfig(num_heads=2, chunk_size=3, dtype=F64, param_dtype=F64, **kw)
  return AtlasMixer(D, cfg, rngs=nnx.Rngs(0))


def _check_decode(layout, x, atol):
  graph, state = nnx.split(layout)
  fwd = jax.jit(lambda s, x: nnx.merge(graph, s)(x))
  pre = jax.jit(lambda s, x: nnx.merge(graph, s).prefill(x))
  dec = jax.jit(lambda s, x, c: nnx.merge(graph, s).decode(x, c))
  y = fwd(state, x)
  y5, cache = pre(state, x[:, :5])
  outs = [y5]
  for t in range(5, x.shape[1]):
    yt, cache = dec(state, x[:, t], cache)
    outs.append(yt[:, None])
  np.testing.assert_allclose(jnp.concatenate(outs, 1), y, atol=atol)
  cache = layout.init_cache(x.shape[0])
  for t in range(4):
    yt, cache = dec(state, x[:, t], cache)
    np.testing.assert_allclose(yt, y[:, t], atol=atol)
  x2 = x.at[:, 4].add(1.0)   # a change at t = 4 leaves outputs before 4 unchanged
  y2 = fwd(state, x2)
  np.testing.assert_array_equal(y2[:, :4], y[:, :4])
  assert float(jnp.max(jnp.abs(y2[:, 4:] - y[:, 4:]))) > 1e-6


@pytest.mark.parametrize("layout", ["lmm", "mal", "mag", "mac"])
def test_titans_layouts_decode_equals_parallel(layout):
  mixer = TitansLayout(layout, D, 2, _titans(), window=4, n_persistent=2, dtype=F64,
                       param_dtype=F64, rngs=nnx.Rngs(1))
  _check_decode(mixer, X, atol=1e-10)


@pytest.mark.parametrize("layout,kw", [
    ("mag", dict(variant="atlas")),
    pytest.param("mal", dict(variant="dla", gamma_mode="token", poly_mode="sym"),
                 marks=pytest.mark.slow),
])
def test_atlas_hybrids_decode_equals_parallel(layout, kw):
  """ATLAS's MAG / MAL hybrids (arXiv 2505.23735 section 3.7) are the Titans layouts."""
  mixer = TitansLayout(layout, D, 2, _atlas(**kw), window=4, n_persistent=0, dtype=F64,
                       param_dtype=F64, rngs=nnx.Rngs(1))
  _check_decode(mixer, X[:, :7], atol=1e-11)


def test_layout_errors():
  with pytest.raises(ValueError, match="layout"):
    TitansLayout("mix", D, 2, _titans(), window=4, n_persistent=0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="window"):
    TitansLayout("mal", D, 2, _titans(), window=0, n_persistent=0, rngs=nnx.Rngs(0))
