"""The written-out backward of the per-token inner gradients against JAX's autodiff (float64)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tnx.memory import chunk_vjp, chunked
from tnx.memory import model as mm

B, H, K = 2, 2, 3
RTOL = 1e-10


def _close(got, want):
  """Every leaf equal to `want` within RTOL of want's largest entry (NaN where want has NaN)."""
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    g, w = np.asarray(g), np.asarray(w)
    np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
    finite = np.isfinite(w)
    scale = np.max(np.abs(w[finite]), initial=1.0)
    np.testing.assert_allclose(g[finite], w[finite], rtol=0, atol=RTOL * scale)


def _tree_like(tree, seed):
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape, x.dtype)
                                      for k, x in zip(keys, leaves)])


@pytest.mark.parametrize("depth,ln_residual,use_bias,activation,loss", [
    (1, False, True, "gelu", "squared_l2"),
    (2, False, True, "gelu", "squared_l2"),
    (2, True, True, "silu", "half_squared_l2"),
    (3, True, False, "tanh", "squared_l2"),
    (2, False, False, "relu", "half_squared_l2"),
])
def test_layer_grads_values_and_vjp_match_autodiff(depth, ln_residual, use_bias, activation,
                                                   loss):
  cfg = mm.MemoryModelConfig(depth=depth, expansion=2, ln_residual=ln_residual,
                             use_bias=use_bias, activation=activation)
  ks = jax.random.split(jax.random.PRNGKey(depth), 5)
  state = jax.tree.map(lambda x: x[0], mm.init_state(cfg, ks[0], K, 1, jnp.float64))
  state = jax.tree.map(lambda x, n: x + 0.3 * n, state, _tree_like(state, 9))
  k, v = (jax.random.normal(key, (6, K), jnp.float64) for key in ks[1:3])
  ln = None
  if ln_residual:
    ln = {"scale": 1.0 + 0.2 * jax.random.normal(ks[3], (K,), jnp.float64),
          "bias": 0.2 * jax.random.normal(ks[4], (K,), jnp.float64)}
  autodiff = lambda s, k, v, ln: mm.layer_grads(cfg, s, k, v, mm.resolve_loss(loss), ln)[:2]
  analytic = lambda s, k, v, ln: chunk_vjp.layer_grads(cfg, loss, s, k, v, ln)
  want = autodiff(state, k, v, ln)
  _close(analytic(state, k, v, ln), want)
  weights = _tree_like(want, 3)
  objective = lambda f: lambda *x: sum(jnp.sum(jnp.sin(a) * w) for a, w in zip(
      jax.tree.leaves(f(*x)), jax.tree.leaves(weights)))
  args = (state, k, v, ln)
  _close(jax.grad(objective(analytic), argnums=(0, 1, 2, 3))(*args),
         jax.grad(objective(autodiff), argnums=(0, 1, 2, 3))(*args))


def _problem(length, depth, ln_residual, momentum, forget, seed=0):
  cfg = mm.MemoryModelConfig(depth=depth, expansion=2, ln_residual=ln_residual)
  ks = jax.random.split(jax.random.PRNGKey(seed), 9)
  s0 = mm.init_state(cfg, ks[0], K, H, jnp.float64)
  s0 = jax.tree.map(lambda x, n: x + 0.1 * n, s0, _tree_like(s0, seed + 1))
  ln = None
  if ln_residual:
    ln = {"scale": 1.0 + 0.1 * jax.random.normal(ks[7], (H, K), jnp.float64),
          "bias": 0.1 * jax.random.normal(ks[6], (H, K), jnp.float64)}
  q, k, v = (jax.random.normal(ks[i], (B, H, length, K), jnp.float64) for i in (1, 2, 3))
  k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
  inputs = dict(q=q, k=k, v=v, lr=0.2 * jax.random.uniform(ks[4], (B, H, length), jnp.float64),
                log_mom_decay=None, log_retention=None)
  if momentum:
    inputs["log_mom_decay"] = jnp.log(jax.random.uniform(ks[5], (B, H, length), jnp.float64,
                                                         0.5, 0.95))
  if forget:
    inputs["log_retention"] = jnp.log1p(-jax.random.uniform(ks[8], (B, H, length),
                                                            jnp.float64, 0.0, 0.2))
  return cfg, s0, ln, inputs


def _grads(cfg, rule, chunk, s0, ln, inputs):
  """Gradient of a weighted sum of the outputs and the returned carry's states with respect
  to the initial state, ln and every input."""

  def objective(s0, ln, inputs):
    o, carry = chunked.chunked_memory(cfg, s0, inputs["q"], inputs["k"], inputs["v"],
                                      inputs["lr"], chunk_size=chunk, rule=rule, ln=ln,
                                      log_mom_decay=inputs["log_mom_decay"],
                                      log_retention=inputs["log_retention"])
    states = (carry.anchor, carry.weights, carry.momentum)
    out = jnp.sum(jnp.where(jnp.isfinite(o), o, 0.0) * jnp.cos(jnp.arange(o.size)).reshape(
        o.shape))
    return out + sum(jnp.sum(jnp.where(jnp.isfinite(x), x, 0.0) * 0.3)
                     for x in jax.tree.leaves(states))

  return jax.grad(objective, argnums=(0, 1, 2))(s0, ln, inputs)


SLOW = pytest.mark.slow
CASES = [  # optimizer, forget, retrieval, depth, ln_residual, chunk, length
    ("momentum", True, "intra_chunk", 2, False, 4, 10),
    pytest.param("gd", True, "chunk_start", 1, True, 5, 12, marks=SLOW),
    pytest.param("gd", False, "intra_chunk", 2, False, 4, 11, marks=SLOW),
    pytest.param("momentum", True, "intra_chunk", 1, True, 3, 8, marks=SLOW),
    pytest.param("momentum", True, "chunk_start", 2, True, 4, 10, marks=SLOW),
    pytest.param("momentum", False, "intra_chunk", 2, True, 8, 8, marks=SLOW),
    pytest.param("momentum", False, "intra_chunk", 2, False, 1, 4, marks=SLOW),
]


@pytest.mark.parametrize("optimizer,forget,retrieval,depth,ln_residual,chunk,length", CASES)
def test_chunked_gradients_match_autodiff(optimizer, forget, retrieval, depth, ln_residual,
                                          chunk, length):
  cfg, s0, ln, inputs = _problem(length, depth, ln_residual, optimizer == "momentum", forget)
  rule = chunked.UpdateRule(optimizer=optimizer, retrieval=retrieval, analytic_vjp=True)
  assert rule.uses_analytic_vjp(cfg)
  _close(_grads(cfg, rule, chunk, s0, ln, inputs),
         _grads(cfg, dataclasses.replace(rule, analytic_vjp=False), chunk, s0, ln, inputs))


def test_nonfinite_tokens_match_autodiff():
  """One (batch row, head) each: a NaN key, an inf value, a NaN step, and finite inputs with
  steps far outside the stable range (the inner loop overflows). The gradients equal
  autodiff's, NaN pattern included (`tnx.memory.finite`)."""
  cfg, s0, ln, inputs = _problem(10, 2, False, True, True, seed=3)
  inputs["k"] = inputs["k"].at[0, 0, 5, 0].set(jnp.nan)
  inputs["v"] = inputs["v"].at[0, 1, 2, 2].set(jnp.inf)
  inputs["lr"] = inputs["lr"].at[1, 0, 7].set(jnp.nan)
  inputs["lr"] = inputs["lr"].at[1, 1].multiply(1e120)
  rule = chunked.UpdateRule(optimizer="momentum", analytic_vjp=True)
  got = _grads(cfg, rule, 4, s0, ln, inputs)
  want = _grads(cfg, dataclasses.replace(rule, analytic_vjp=False), 4, s0, ln, inputs)
  assert any(np.isnan(np.asarray(x)).any() for x in jax.tree.leaves(want))
  _close(got, want)


def test_selection_keeps_autodiff_elsewhere():
  mlp = mm.MemoryModelConfig()
  rule = chunked.UpdateRule(analytic_vjp=True)
  assert rule.uses_analytic_vjp(mlp)
  assert chunked.UpdateRule(inner_loss="half_squared_l2", analytic_vjp=True).uses_analytic_vjp(
      mm.MemoryModelConfig(depth=1))
  assert not rule.uses_analytic_vjp(mm.MemoryModelConfig.from_kind("gated_mlp"))
  assert not dataclasses.replace(rule, analytic_vjp=False).uses_analytic_vjp(mlp)
  for other in (dict(optimizer="muon"), dict(window=2), dict(inner_loss="l1"),
                dict(inner_loss=lambda p, t: jnp.sum((p - t) ** 2))):
    assert not dataclasses.replace(rule, **other).uses_analytic_vjp(mlp)
