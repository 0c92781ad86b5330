"""Newton-Schulz orthogonalization of the Muon inner optimizer against the SVD (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tnx.memory import inner_optim

F64 = jnp.float64


def test_newton_schulz_properties():
  g = jax.random.normal(jax.random.PRNGKey(0), (3, 32, 32), F64)
  polar = inner_optim.polar_factor(g)
  cubic = inner_optim.newton_schulz(g, 30, inner_optim.CUBIC)
  # (a) cubic converges to the polar factor U V^T.
  np.testing.assert_allclose(cubic, polar, atol=1e-6)
  # (b) quintic NS-5 on well-conditioned Gaussian 64x256: singular values in the measured
  # band [0.68, 1.14] (docs/atlas.md), never exactly 1; square Gaussians (condition ~1e3)
  # keep small directions (min ~0.02 after 5 steps) and need ~10 steps.
  g64 = jax.random.normal(jax.random.PRNGKey(1), (4, 64, 256), F64)
  sv = jnp.linalg.svd(inner_optim.newton_schulz(g64), compute_uv=False)
  assert 0.67 < float(sv.min()) < 0.7 and 1.0 < float(sv.max()) < 1.2
  sq = jax.random.normal(jax.random.PRNGKey(1), (4, 64, 64), F64)
  sv10 = jnp.linalg.svd(inner_optim.newton_schulz(sq, 10), compute_uv=False)
  assert 0.67 < float(sv10.min()) and float(sv10.max()) < 1.2
  # (c) singular vectors preserved: U^T NS(G) V is diagonal.
  u, _, vt = jnp.linalg.svd(g[0])
  core = u.T @ inner_optim.newton_schulz(g[0]) @ vt.T
  off = core - jnp.diag(jnp.diag(core))
  assert float(jnp.max(jnp.abs(off))) < 1e-9
  ns = inner_optim.newton_schulz(g)
  # (d) odd, (e) scale invariant, (f) transpose symmetric, (g) batched == loop, zero -> zero.
  np.testing.assert_allclose(inner_optim.newton_schulz(-g), -ns, atol=1e-14)
  for s in (1e-6, 1e6):
    np.testing.assert_allclose(inner_optim.newton_schulz(s * g), ns, atol=1e-10)
  tall = jax.random.normal(jax.random.PRNGKey(2), (12, 5), F64)
  np.testing.assert_allclose(inner_optim.newton_schulz(tall.T),
                             inner_optim.newton_schulz(tall).T, atol=1e-14)
  np.testing.assert_allclose(ns[1], inner_optim.newton_schulz(g[1]), atol=1e-14)
  assert not np.any(np.asarray(inner_optim.newton_schulz(jnp.zeros((4, 4), F64))))
  with pytest.raises(ValueError, match="g must"):
    inner_optim.newton_schulz(jnp.ones(3))
