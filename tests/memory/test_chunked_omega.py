"""The memory primitive with an Omega window (ATLAS) against slow references and closed forms
(float64): windows, window gates, momentum placements, Muon, gated memories."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tnx.memory import chunked, gates, reference
from tnx.memory import model as mm

F64 = jnp.float64
Rule = chunked.UpdateRule


def _inputs(seed, length, zdim, vdim, window, gamma_mode="token"):
  """Queries/keys, values and gates; the decay gates as logs (the primitive's convention)."""
  ks = jax.random.split(jax.random.PRNGKey(seed), 8)
  n = lambda k, s, sc=0.5: jax.random.normal(k, (1, 1) + s, F64) * sc
  u = lambda k, lo, hi, s=(): jax.random.uniform(k, (1, 1, length) + s, F64, lo, hi)
  gshape = (window,) if gamma_mode == "window" else ()
  return dict(q=n(ks[0], (length, zdim)), k=n(ks[1], (length, zdim)),
              v=n(ks[2], (length, vdim), 1.0), lr=u(ks[3], 0.05, 0.3),
              log_retention=jnp.log(u(ks[4], 0.8, 1.0)),
              log_mom_decay=jnp.log(u(ks[5], 0.0, 0.9)),
              window_gate=u(ks[6], 0.0, 1.0, gshape))


def _state(kind, seed, din, dout):
  cfg = mm.MemoryModelConfig.from_kind(kind, expansion=2)
  return cfg, mm.init_state(cfg, jax.random.PRNGKey(seed), din, 1, F64, out_dim=dout)


GATES = ("log_retention", "log_mom_decay", "window_gate")


def _run(cfg, rule, s0, inp, chunk):
  fn = jax.jit(functools.partial(chunked.chunked_memory, cfg, chunk_size=chunk, rule=rule,
                                 remat_group=0))
  gates_ = {g: inp[g] for g in GATES if g != "log_mom_decay" or rule.has_momentum}
  return fn(s0, inp["q"], inp["k"], inp["v"], inp["lr"], **gates_)


CASES = [  # kind, optimizer, window, gate mode, placement, chunk
    ("gated_mlp", "momentum", 3, "window", "outside", 4),
    ("mlp", "muon", 3, "window", "outside", 4),
    ("linear", "muon", 2, "token", "inside", 1),
]


@pytest.mark.parametrize("kind,optimizer,window,gmode,placement,chunk", CASES)
def test_chunked_equals_sequential_and_decode(kind, optimizer, window, gmode, placement, chunk):
  cfg, s0 = _state(kind, 3, 4, 4)
  rule = Rule(window=window, optimizer=optimizer, step_placement=placement)
  inp = _inputs(0, 9, 4, 4, window, gmode)
  o, carry = _run(cfg, rule, s0, inp, chunk)
  one = lambda x: x[0, 0]
  ref_fn = jax.jit(functools.partial(reference.sequential_reference, cfg, chunk_size=chunk,
                                     rule=rule))
  ref, w_ref = ref_fn(jax.tree.map(lambda x: x[0], s0), *(one(inp[n]) for n in "qkv"),
                      one(inp["lr"]), **{g: one(inp[g]) for g in GATES})
  np.testing.assert_allclose(o[0, 0], ref, atol=1e-11)
  for got, want in zip(jax.tree.leaves(carry.weights), jax.tree.leaves(w_ref)):
    np.testing.assert_allclose(got[0, 0], want, atol=1e-11)
  # Decode from scratch reproduces the parallel forward token by token.
  step = jax.jit(functools.partial(chunked.decode_step, cfg, chunk_size=chunk, rule=rule))
  c = chunked.init_carry(s0, 1, rule)
  outs = []
  for t in range(9):
    ot, c = step(c, *(inp[n][:, :, t] for n in ("q", "k", "v", "lr")),
                 **{g: inp[g][:, :, t] for g in GATES})
    outs.append(ot)
  np.testing.assert_allclose(jnp.stack(outs, 2), o, atol=1e-11)


@pytest.mark.parametrize("depth", [1, 2])
def test_window_paths_reduce_to_window_one(depth):
  """Window 2 whose older entry is gated to 0 (window-owned gates (1, 0)) is window 1, through
  the buffer and the window matrix; momentum "outside" with a constant lr equals "inside"
  (S_inside = lr S_outside); a token-owned gate of ones equals no gate."""
  k_dim, length, chunk = 4, 10, 4
  cfg = mm.MemoryModelConfig(depth=depth, expansion=2, use_bias=False)
  s0 = mm.init_state(cfg, jax.random.PRNGKey(1), k_dim, 1, F64)
  inp = _inputs(5, length, k_dim, k_dim, 1)
  q, k, v, lr = (inp[n] for n in ("q", "k", "v", "lr"))
  run = lambda rule, lr_, **g: jax.jit(functools.partial(
      chunked.chunked_memory, cfg, chunk_size=chunk, rule=rule, remat_group=0))(
          s0, q, k, v, lr_, **g)[0]
  one_zero = jnp.broadcast_to(jnp.asarray([1.0, 0.0], F64), (1, 1, length, 2))
  np.testing.assert_allclose(run(Rule(window=2), lr, window_gate=one_zero), run(Rule(), lr),
                             atol=1e-12)
  np.testing.assert_allclose(run(Rule(), lr, window_gate=jnp.ones_like(lr)), run(Rule(), lr),
                             atol=1e-12)
  g = dict(log_retention=inp["log_retention"], log_mom_decay=inp["log_mom_decay"])
  mom = Rule(optimizer="momentum")
  np.testing.assert_allclose(run(Rule(window=2, optimizer="momentum"), lr, window_gate=one_zero,
                                 **g), run(mom, lr, **g), atol=1e-12)
  const = jnp.full_like(lr, 0.2)
  np.testing.assert_allclose(run(Rule(optimizer="momentum", step_placement="outside"), const,
                                 **g), run(mom, const, **g), atol=1e-12)


def test_full_window_is_gd_on_prefix_loss():
  """c >= L, chunk 1, gamma = 1: W_t = W_{t-1} - eta_t grad sum_{i<=t} loss_i(W_{t-1})."""
  cfg, s0 = _state("mlp", 2, 3, 3)
  inp = _inputs(1, 6, 3, 3, 6)
  o, _ = jax.jit(functools.partial(chunked.chunked_memory, cfg, chunk_size=1,
                                   rule=Rule(window=8), remat_group=0))(
      s0, inp["q"], inp["k"], inp["v"], inp["lr"])
  w = jax.tree.map(lambda x: x[0], s0)
  zk, v, zq = inp["k"][0, 0], inp["v"][0, 0], inp["q"][0, 0]

  @jax.jit
  def ref(w):
    outs = []
    for t in range(6):
      prefix = lambda p: jnp.sum((mm.apply(cfg, p, zk[: t + 1]) - v[: t + 1]) ** 2)
      g = jax.grad(prefix)(w)
      w = jax.tree.map(lambda a, b: a - inp["lr"][0, 0, t] * b, w, g)
      outs.append(mm.apply(cfg, w, zq[t]))
    return jnp.stack(outs)

  np.testing.assert_allclose(o[0, 0], ref(w), atol=1e-12)


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
  lr = jnp.full((1, 1, n_pairs * epochs), 1.0 / ((lam_max + lam_min) * n_pairs), F64)
  cfg = mm.MemoryModelConfig.from_kind("linear")
  s0 = ({"w": jnp.zeros((1, d, d), F64)},)
  fn = jax.jit(functools.partial(chunked.chunked_memory, cfg, chunk_size=n_pairs,
                                 rule=Rule(window=n_pairs), remat_group=0))
  _, carry = fn(s0, tile(keys), tile(keys), tile(vals), lr)
  np.testing.assert_allclose(carry.weights[0]["w"][0, 0], jnp.linalg.pinv(keys) @ vals,
                             atol=1e-9)


def test_swla_ramp_identity():
  """Dot loss, alpha = gamma = 1, eta = 1, linear: W_L = sum_i min(c, L - i) k_i v_i^T."""
  length, c = 9, 3
  inp = _inputs(2, length, 3, 3, c)
  s0 = ({"w": jnp.zeros((1, 3, 3), F64)},)
  rule = Rule(window=c, inner_loss="dot")
  fn = jax.jit(functools.partial(chunked.chunked_memory, mm.MemoryModelConfig.from_kind("linear"),
                                 chunk_size=4, rule=rule, remat_group=0))
  _, carry = fn(s0, inp["q"], inp["k"], inp["v"], jnp.ones((1, 1, length), F64))
  ramp = jnp.minimum(c, length - jnp.arange(length)).astype(F64)
  expect = jnp.einsum("i,ik,iv->kv", ramp, inp["k"][0, 0], inp["v"][0, 0])
  np.testing.assert_allclose(carry.weights[0]["w"][0, 0], expect, atol=1e-12)


def test_hard_pruning_and_causality():
  """gamma_i = 0 removes token i's key/value from every output; outputs before t do not
  depend on inputs at t."""
  cfg, s0 = _state("mlp", 0, 3, 3)
  rule = Rule(window=3, optimizer="momentum", step_placement="outside")
  inp = _inputs(3, 8, 3, 3, 3)
  gamma = inp["window_gate"].at[0, 0, 4].set(0.0)

  def out(zk, v):
    return chunked.chunked_memory(cfg, s0, inp["q"], zk, v, inp["lr"], chunk_size=3,
                                  rule=rule, log_retention=inp["log_retention"],
                                  log_mom_decay=inp["log_mom_decay"], window_gate=gamma,
                                  remat_group=0)[0]

  jk, jv = jax.jit(jax.jacobian(out, argnums=(0, 1)))(inp["k"], inp["v"])
  np.testing.assert_array_equal(jk[..., 4, :], 0.0)
  np.testing.assert_array_equal(jv[..., 4, :], 0.0)
  for t in range(8):   # d o[s] / d input[t] == 0 for s < t
    np.testing.assert_array_equal(jv[0, 0, :t, :, 0, 0, t, :], 0.0)
    np.testing.assert_array_equal(jk[0, 0, :t, :, 0, 0, t, :], 0.0)
  assert float(jnp.max(jnp.abs(jv[0, 0, 5, :, 0, 0, 5, :]))) > 1e-3


@pytest.mark.slow
def test_muon_without_orthogonalization_is_momentum():
  cfg, s0 = _state("gated_mlp", 0, 4, 4)
  inp = _inputs(6, 10, 4, 4, 2, "window")
  o_mu, c_mu = _run(cfg, Rule(window=2, optimizer="muon", ns_steps=0, step_placement="outside"),
                    s0, inp, 4)
  o_mo, c_mo = _run(cfg, Rule(window=2, optimizer="momentum", step_placement="outside"), s0,
                    inp, 4)
  np.testing.assert_allclose(o_mu, o_mo, atol=1e-12)
  for got, want in zip(jax.tree.leaves(c_mu.momentum), jax.tree.leaves(c_mo.momentum)):
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_window_matrix_band_and_validation():
  gam = gates.window_matrix(jnp.ones((4, 3)), jnp.ones(6), 3)
  i, e = np.indices((4, 6))
  np.testing.assert_array_equal(np.asarray(gam), ((e >= i) & (e <= i + 2)).astype(float))
  np.testing.assert_array_equal(gates.window_matrix(jnp.ones((4, 1)), jnp.ones(4), 1),
                                np.eye(4))
  with pytest.raises(ValueError, match="window"):
    Rule(window=0)
  with pytest.raises(ValueError, match="optimizer"):
    Rule(optimizer="adam")
  cfg = mm.MemoryModelConfig.from_kind("linear")
  s0 = ({"w": jnp.zeros((1, 2, 2))},)
  x = jnp.zeros((1, 1, 3, 2))
  with pytest.raises(ValueError, match="lr"):
    chunked.chunked_memory(cfg, s0, x, x, x, -jnp.ones((1, 1, 3)), chunk_size=2)
  with pytest.raises(ValueError, match="window_gate"):
    chunked.chunked_memory(cfg, s0, x, x, x, jnp.ones((1, 1, 3)), chunk_size=2,
                           rule=Rule(window=2), window_gate=jnp.ones((1, 1, 3, 3)))
  with pytest.raises(ValueError, match="use_bias"):
    chunked.chunked_memory(mm.MemoryModelConfig(depth=1), ({"w": jnp.zeros((1, 2, 2)),
                                                            "b": jnp.zeros((1, 2))},),
                           x, x, x, jnp.ones((1, 1, 3)), chunk_size=2,
                           rule=Rule(optimizer="muon"))
  with pytest.raises(ValueError, match="log_mom_decay"):
    chunked.chunked_memory(cfg, s0, x, x, x, jnp.ones((1, 1, 3)), chunk_size=2,
                           log_mom_decay=jnp.zeros((1, 1, 3)))
