"""Feature maps and kernel-trick models against closed forms and the memory primitive
(float64)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tnx.memory import chunked
from tnx.memory import model as mm
from tnx.memory.atlas import features, kernel

F64 = jnp.float64


def _qkv(seed, length=10, d=4, vdim=3, scale=0.5):
  ks = jax.random.split(jax.random.PRNGKey(seed), 4)
  n = lambda k, s: jax.random.normal(k, (1, 1, length, s), F64)
  return n(ks[0], d) * scale, n(ks[1], d) * scale, n(ks[2], vdim), ks[3]


@pytest.mark.parametrize("mode", ["kron", "sym"])
def test_poly_kernel_identity_and_dims(mode):
  x, y, _, _ = _qkv(0)
  a = jnp.asarray([0.3, 1.0, -0.5, 0.2], F64)   # a negative coefficient is allowed
  zx = features.poly_features(x[0, 0], a, side="query", mode=mode)
  zy = features.poly_features(y[0, 0], a, side="key", mode=mode)
  assert zx.shape[-1] == features.feature_dim(4, 3, mode)
  np.testing.assert_allclose(zx @ zy.T, features.poly_kernel(x[0, 0], y[0, 0], a), atol=1e-13)
  assert features.feature_dim(8, 2, "sym") == 45 and features.feature_dim(8, 2, "kron") == 73


def test_sketch_is_unbiased_monte_carlo():
  """Random features: the mean over 64 independent sketches of width 256 estimates (x.y)^2
  within 6 standard errors (false-failure rate < 1e-8 under a normal approximation)."""
  x = jnp.asarray([0.6, -0.3, 0.5], F64)
  y = jnp.asarray([0.4, 0.7, 0.2], F64)
  a = jnp.asarray([0.0, 0.0, 1.0], F64)
  keys = jax.random.split(jax.random.PRNGKey(0), 64)
  est = jax.vmap(lambda k: features.poly_features(
      x, a, mode="sketch", sketch=features.sketch_matrices(k, 3, 2, 256, F64)) @
      features.poly_features(y, a, mode="sketch",
                             sketch=features.sketch_matrices(k, 3, 2, 256, F64)))(keys)
  se = float(jnp.std(est)) / math.sqrt(64)
  assert abs(float(jnp.mean(est)) - float(x @ y) ** 2) < 6 * se


@pytest.mark.slow
def test_identity_gating_recovers_plain_keys():
  """a = (0, 1, 0): the polynomial memory equals the phi-free memory end to end."""
  q, k, v, key = _qkv(1, d=3, vdim=3)
  eta = jnp.full((1, 1, 10), 0.2, F64)
  mcfg = mm.MemoryModelConfig.from_kind("mlp", expansion=2)
  rule = chunked.UpdateRule(window=2)
  a = jnp.asarray([0.0, 1.0, 0.0], F64)
  phi = lambda x, side: features.poly_features(x, a, side=side)
  big = mm.init_state(mcfg, key, 13, 1, F64, out_dim=3)   # 1 + 3 + 9 features
  small = ({"w": big[0]["w"][:, 1:4]}, big[1])
  run = lambda s, zq, zk: chunked.chunked_memory(mcfg, s, zq, zk, v, eta, chunk_size=4,
                                                 rule=rule)[0]
  np.testing.assert_allclose(run(big, phi(q, "query"), phi(k, "key")), run(small, q, k),
                             atol=1e-13)


def test_deep_transformer_is_unnormalized_attention_and_taylor_limit():
  q, k, v, _ = _qkv(2)
  rule = chunked.UpdateRule(window=1, inner_loss="dot")
  ones = jnp.ones((1, 1, 10), F64)
  exact = kernel.kernel_memory(rule, q, k, v, ones, chunk_size=4)
  attn = jnp.einsum("ls,sv->lv", jnp.tril(jnp.exp(q[0, 0] @ k[0, 0].T)), v[0, 0])
  np.testing.assert_allclose(exact[0, 0], attn, rtol=1e-12)
  errs = []
  for p in range(1, 5):   # truncated phi*: a_i = 1/i!, linear memory from 0
    a = features.taylor_coefficients(p, F64)
    zq, zk = (features.poly_features(x, a, side=s) for x, s in ((q, "query"), (k, "key")))
    s0 = ({"w": jnp.zeros((1, zq.shape[-1], 3), F64)},)
    o, _ = chunked.chunked_memory(mm.MemoryModelConfig.from_kind("linear"), s0, zq, zk, v,
                                  ones, chunk_size=4, rule=rule)
    errs.append(float(jnp.max(jnp.abs(o[0, 0] - attn)) / jnp.max(jnp.abs(attn))))
  assert all(e2 < e1 for e1, e2 in zip(errs, errs[1:])) and errs[-1] < 1e-2, errs


def test_dot_window_one_is_triangular_solve():
  """Dot, c = 1, linear, half squared loss: (I + diag(eta) L) U = diag(eta) V and
  y = (exp(Q K^T) o causal) U with L[t, j] = exp(k_j . k_t) [j < t]."""
  q, k, v, _ = _qkv(3)
  eta = jax.random.uniform(jax.random.PRNGKey(9), (1, 1, 10), F64, 0.1, 0.5)
  rule = chunked.UpdateRule(window=1, inner_loss="half_squared_l2")
  out = kernel.kernel_memory(rule, q, k, v, eta, chunk_size=1)
  kk = jnp.exp(k[0, 0] @ k[0, 0].T)
  lower = jnp.tril(kk, -1)
  u = jnp.linalg.solve(jnp.eye(10) + eta[0, 0][:, None] * lower, eta[0, 0][:, None] * v[0, 0])
  y = jnp.tril(jnp.exp(q[0, 0] @ k[0, 0].T)) @ u
  np.testing.assert_allclose(out[0, 0], y, atol=1e-12)


def test_kernel_path_equals_feature_path():
  """Window 3, window-owned gates, momentum, retention, chunk 4: kernel trick with the finite
  polynomial kernel == explicit features through the Omega primitive."""
  q, k, v, key = _qkv(4, length=11, d=3)
  ks = jax.random.split(key, 4)
  u = lambda i, lo, hi, s=(): jax.random.uniform(ks[i], (1, 1, 11) + s, F64, lo, hi)
  gates = dict(log_retention=jnp.log(u(0, 0.8, 1.0)), log_mom_decay=jnp.log(u(1, 0.0, 0.9)),
               window_gate=u(2, 0.0, 1.0, (3,)))
  eta = u(3, 0.05, 0.3)
  a = jnp.asarray([0.7, 1.0, 0.5], F64)
  rule = chunked.UpdateRule(window=3, optimizer="momentum", step_placement="outside")
  zq, zk = features.poly_features(q, a, side="query"), features.poly_features(k, a, side="key")
  s0 = ({"w": jnp.zeros((1, zq.shape[-1], 3), F64)},)
  o, _ = chunked.chunked_memory(mm.MemoryModelConfig.from_kind("linear"), s0, zq, zk, v, eta,
                                chunk_size=4, rule=rule, **gates)
  ok = kernel.kernel_memory(rule, q, k, v, eta, chunk_size=4,
                            kernel=functools.partial(features.poly_kernel, coeffs=a), **gates)
  np.testing.assert_allclose(o, ok, atol=1e-12)
  with pytest.raises(ValueError, match="muon"):
    kernel.kernel_memory(chunked.UpdateRule(optimizer="muon"), q, k, v, eta, chunk_size=4)
