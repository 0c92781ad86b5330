"""The windowed Omega-rule primitive against slow references and closed forms (float64)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tnx.memory import chunked
from tnx.memory import model as mm
from tnx.memory.atlas import memory as amem
from tnx.memory.atlas import omega

F64 = jnp.float64


def _inputs(seed, length, zdim, vdim, window, gamma_mode="token"):
  ks = jax.random.split(jax.random.PRNGKey(seed), 8)
  n = lambda k, s, sc=0.5: jax.random.normal(k, (1, 1) + s, F64) * sc
  u = lambda k, lo, hi, s=(): jax.random.uniform(k, (1, 1, length) + s, F64, lo, hi)
  gshape = (window,) if gamma_mode == "window" else ()
  return dict(zq=n(ks[0], (length, zdim)), zk=n(ks[1], (length, zdim)),
              v=n(ks[2], (length, vdim), 1.0), eta=u(ks[3], 0.05, 0.3),
              alpha=u(ks[4], 0.8, 1.0), theta=u(ks[5], 0.0, 0.9),
              gamma=u(ks[6], 0.0, 1.0, gshape))


def _run(mcfg, rule, s0, inp, chunk):
  fn = jax.jit(functools.partial(omega.omega_memory, mcfg, rule, chunk_size=chunk,
                                 remat_group=0))
  return fn(s0, inp["zq"], inp["zk"], inp["v"], inp["eta"], alpha=inp["alpha"],
            theta=inp["theta"], gamma=inp["gamma"])


CASES = [  # kind, optimizer, window, gate mode, placement, chunk
      ("gated_mlp", "momentum", 3, "window", "outside", 4),
    ("mlp", "muon", 3, "window", "outside", 4),
    ("linear", "muon", 2, "token", "inside", 1),
]


@pytest.mark.parametrize("kind,optimizer,window,gmode,placement,chunk", CASES)
def test_chunked_equals_sequential_and_decode(kind, optimizer, window, gmode, placement, chunk):
  mcfg = amem.AtlasMemoryConfig(kind=kind, expansion=2)
  rule = omega.OmegaRule(window=window, optimizer=optimizer, step_placement=placement)
  s0 = amem.init_memory(mcfg, jax.random.PRNGKey(3), 4, 4, 1, F64)
  inp = _inputs(0, 9, 4, 4, window, gmode)
  o, carry = _run(mcfg, rule, s0, inp, chunk)
  one = lambda x: x[0, 0]
  ref_fn = jax.jit(functools.partial(omega.sequential_reference, mcfg, rule, chunk_size=chunk))
  ref, w_ref = ref_fn(jax.tree.map(lambda x: x[0], s0), one(inp["zq"]), one(inp["zk"]),
                      one(inp["v"]), one(inp["eta"]), alpha=one(inp["alpha"]),
                      theta=one(inp["theta"]), gamma=one(inp["gamma"]))
  np.testing.assert_allclose(o[0, 0], ref, atol=1e-11)
  for n in w_ref:
    np.testing.assert_allclose(carry.weights[n][0, 0], w_ref[n], atol=1e-11)
  # Decode from scratch reproduces the parallel forward token by token.
  step = jax.jit(functools.partial(omega.omega_decode_step, mcfg, rule, chunk_size=chunk))
  c = omega.init_carry(s0, 1, rule, 4, F64)
  outs = []
  for t in range(9):
    ot, c = step(c, *(inp[k][:, :, t] for k in ("zq", "zk", "v", "eta")),
                 alpha=inp["alpha"][:, :, t], theta=inp["theta"][:, :, t],
                 gamma=inp["gamma"][:, :, t])
    outs.append(ot)
  np.testing.assert_allclose(jnp.stack(outs, 2), o, atol=1e-11)


@pytest.mark.parametrize("depth", [1, 2])
def test_window_one_is_delta_rule_and_titans(depth):
  """c = 1, gamma = 1: GD == tnx.memory.chunked without momentum (delta rule for a linear
  memory); momentum with eta inside == chunked's Titans update (beta = theta, forget = 1 -
  alpha, lr = eta)."""
  k_dim, length, chunk = 4, 10, 4
  mmc = mm.MemoryModelConfig(depth=depth, expansion=2, use_bias=False)
  ref_state = mm.init_state(mmc, jax.random.PRNGKey(1), k_dim, 1, F64)
  names = ["w"] if depth == 1 else ["w_in", "w_out"]
  s0 = {n: layer["w"] for n, layer in zip(names, ref_state)}
  mcfg = amem.AtlasMemoryConfig(kind="linear" if depth == 1 else "mlp", expansion=2)
  inp = _inputs(5, length, k_dim, k_dim, 1)
  q, k, v, eta = inp["zq"], inp["zk"], inp["v"], inp["eta"]
  ref = jax.jit(functools.partial(chunked.chunked_memory, mmc, chunk_size=chunk,
                                  remat_group=0))
  mine = lambda rule: jax.jit(functools.partial(omega.omega_memory, mcfg, rule,
                                                chunk_size=chunk, remat_group=0))
  o_ref, _ = ref(ref_state, q, k, v, eta)
  o, _ = mine(omega.OmegaRule(window=1))(s0, q, k, v, eta)
  np.testing.assert_allclose(o, o_ref, atol=1e-12)
  o_ref, _ = ref(ref_state, q, k, v, eta, log_mom_decay=jnp.log(inp["theta"]),
                 log_retention=jnp.log(inp["alpha"]))
  rule = omega.OmegaRule(window=1, optimizer="momentum", step_placement="inside")
  o, _ = mine(rule)(s0, q, k, v, eta, alpha=inp["alpha"], theta=inp["theta"])
  np.testing.assert_allclose(o, o_ref, atol=1e-12)


def test_full_window_is_gd_on_prefix_loss():
  """c >= L, chunk 1, gamma = 1: W_t = W_{t-1} - eta_t grad sum_{i<=t} loss_i(W_{t-1})."""
  mcfg = amem.AtlasMemoryConfig(kind="mlp", expansion=2)
  s0 = amem.init_memory(mcfg, jax.random.PRNGKey(2), 3, 3, 1, F64)
  inp = _inputs(1, 6, 3, 3, 6)
  o, _ = jax.jit(functools.partial(omega.omega_memory, mcfg, omega.OmegaRule(window=8),
                                   chunk_size=1, remat_group=0))(
      s0, inp["zq"], inp["zk"], inp["v"], inp["eta"])
  w = jax.tree.map(lambda x: x[0], s0)
  zk, v, zq = inp["zk"][0, 0], inp["v"][0, 0], inp["zq"][0, 0]

  @jax.jit
  def reference(w):
    outs = []
    for t in range(6):
      prefix = lambda p: jnp.sum((amem.apply(mcfg, p, zk[: t + 1]) - v[: t + 1]) ** 2)
      g = jax.grad(prefix)(w)
      w = jax.tree.map(lambda a, b: a - inp["eta"][0, 0, t] * b, w, g)
      outs.append(amem.apply(mcfg, w, zq[t]))
    return jnp.stack(outs)

  np.testing.assert_allclose(o[0, 0], reference(w), atol=1e-12)


@pytest.mark.parametrize("n_pairs", [5, 12])
def test_window_covering_context_converges_to_least_squares(n_pairs):
  """N pairs repeated, window c = chunk = N, linear memory from 0: each chunk is one full-batch
  GD step, so W converges to the min-norm least-squares fit pinv(K) V (N <= d: exact recall)."""
  d, epochs = 8, 300
  ks = jax.random.split(jax.random.PRNGKey(4), 2)
  keys = jax.random.normal(ks[0], (n_pairs, d), F64) / np.sqrt(d)
  vals = jax.random.normal(ks[1], (n_pairs, d), F64)
  ev = np.linalg.eigvalsh(np.asarray(keys @ keys.T))
  lam_max, lam_min = ev[-1], ev[ev > 1e-9 * ev[-1]][0]
  tile = lambda x: jnp.tile(x, (epochs, 1))[None, None]
  # One chunk = GD with step 2 * eta * N on the summed loss; optimal for the spectrum.
  eta = jnp.full((1, 1, n_pairs * epochs), 1.0 / ((lam_max + lam_min) * n_pairs), F64)
  mcfg = amem.AtlasMemoryConfig(kind="linear")
  s0 = {"w": jnp.zeros((1, d, d), F64)}
  fn = jax.jit(functools.partial(omega.omega_memory, mcfg, omega.OmegaRule(window=n_pairs),
                                 chunk_size=n_pairs, remat_group=0))
  _, carry = fn(s0, tile(keys), tile(keys), tile(vals), eta)
  np.testing.assert_allclose(carry.weights["w"][0, 0], jnp.linalg.pinv(keys) @ vals, atol=1e-9)


def test_swla_ramp_identity():
  """Dot loss, alpha = gamma = 1, eta = 1, linear: W_L = sum_i min(c, L - i) k_i v_i^T."""
  length, c = 9, 3
  inp = _inputs(2, length, 3, 3, c)
  s0 = {"w": jnp.zeros((1, 3, 3), F64)}
  rule = omega.OmegaRule(window=c, inner_loss="dot")
  fn = jax.jit(functools.partial(omega.omega_memory, amem.AtlasMemoryConfig(kind="linear"),
                                 rule, chunk_size=4, remat_group=0))
  _, carry = fn(s0, inp["zq"], inp["zk"], inp["v"], jnp.ones((1, 1, length), F64))
  ramp = jnp.minimum(c, length - jnp.arange(length)).astype(F64)
  expect = jnp.einsum("i,ik,iv->kv", ramp, inp["zk"][0, 0], inp["v"][0, 0])
  np.testing.assert_allclose(carry.weights["w"][0, 0], expect, atol=1e-12)


def test_hard_pruning_and_causality():
  """gamma_i = 0 removes token i's key/value from every output; outputs before t do not
  depend on inputs at t."""
  mcfg = amem.AtlasMemoryConfig(kind="mlp", expansion=2)
  rule = omega.OmegaRule(window=3, optimizer="momentum")
  s0 = amem.init_memory(mcfg, jax.random.PRNGKey(0), 3, 3, 1, F64)
  inp = _inputs(3, 8, 3, 3, 3)
  gamma = inp["gamma"].at[0, 0, 4].set(0.0)

  def out(zk, v):
    return omega.omega_memory(mcfg, rule, s0, inp["zq"], zk, v, inp["eta"], chunk_size=3,
                              alpha=inp["alpha"], theta=inp["theta"], gamma=gamma,
                              remat_group=0)[0]

  jk, jv = jax.jit(jax.jacobian(out, argnums=(0, 1)))(inp["zk"], inp["v"])
  np.testing.assert_array_equal(jk[..., 4, :], 0.0)
  np.testing.assert_array_equal(jv[..., 4, :], 0.0)
  for t in range(8):   # d o[s] / d input[t] == 0 for s < t
    np.testing.assert_array_equal(jv[0, 0, :t, :, 0, 0, t, :], 0.0)
    np.testing.assert_array_equal(jk[0, 0, :t, :, 0, 0, t, :], 0.0)
  assert float(jnp.max(jnp.abs(jv[0, 0, 5, :, 0, 0, 5, :]))) > 1e-3


@pytest.mark.slow
def test_muon_without_orthogonalization_is_momentum():
  mcfg = amem.AtlasMemoryConfig(kind="gated_mlp", expansion=2)
  s0 = amem.init_memory(mcfg, jax.random.PRNGKey(0), 4, 4, 1, F64)
  inp = _inputs(6, 10, 4, 4, 2, "window")
  o_mu, c_mu = _run(mcfg, omega.OmegaRule(window=2, optimizer="muon", ns_steps=0), s0, inp, 4)
  o_mo, c_mo = _run(mcfg, omega.OmegaRule(window=2, optimizer="momentum"), s0, inp, 4)
  np.testing.assert_allclose(o_mu, o_mo, atol=1e-12)
  for n in s0:
    np.testing.assert_allclose(c_mu.momentum[n], c_mo.momentum[n], atol=1e-12)


def test_window_matrix_band_and_validation():
  gam = omega.window_matrix(jnp.ones((4, 3)), jnp.ones(6), 3)
  i, e = np.indices((4, 6))
  np.testing.assert_array_equal(np.asarray(gam), ((e >= i) & (e <= i + 2)).astype(float))
  np.testing.assert_array_equal(omega.window_matrix(jnp.ones((4, 1)), jnp.ones(4), 1),
                                np.eye(4))
  with pytest.raises(ValueError, match="window"):
    omega.OmegaRule(window=0)
  with pytest.raises(ValueError, match="optimizer"):
    omega.OmegaRule(optimizer="adam")
  mcfg = amem.AtlasMemoryConfig(kind="linear")
  s0 = {"w": jnp.zeros((1, 2, 2))}
  x = jnp.zeros((1, 1, 3, 2))
  with pytest.raises(ValueError, match="eta"):
    omega.omega_memory(mcfg, omega.OmegaRule(), s0, x, x, x, -jnp.ones((1, 1, 3)),
                       chunk_size=2)
  with pytest.raises(ValueError, match="gamma"):
    omega.omega_memory(mcfg, omega.OmegaRule(window=2), s0, x, x, x, jnp.ones((1, 1, 3)),
                       chunk_size=2, gamma=jnp.ones((1, 1, 3, 3)))
