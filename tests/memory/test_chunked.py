"""Exactness tests of the chunked memory primitive against slow references (float64)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tnx.memory import chunked, gates, reference
from tnx.memory import model as mm

B, H, K = 2, 2, 3
MOM = chunked.UpdateRule(optimizer="momentum")  # Titans: momentum with lr inside


def _problem(seed, length, depth=2, ln_residual=False, momentum=False, forget=False,
             lr_scale=0.2):
  cfg = mm.MemoryModelConfig(depth=depth, expansion=2, ln_residual=ln_residual)
  ks = jax.random.split(jax.random.PRNGKey(seed), 9)
  s0 = mm.init_state(cfg, ks[0], K, H, jnp.float64)
  s0 = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(ks[8], x.shape, x.dtype), s0)
  ln = None
  if ln_residual:
    ln = {"scale": 1.0 + 0.1 * jax.random.normal(ks[7], (H, K), jnp.float64),
          "bias": 0.1 * jax.random.normal(ks[6], (H, K), jnp.float64)}
  q, k, v = (jax.random.normal(ks[i], (B, H, length, K), jnp.float64) for i in (1, 2, 3))
  k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
  lr = lr_scale * jax.random.uniform(ks[4], (B, H, length), jnp.float64)
  md = jax.random.uniform(ks[5], (B, H, length), jnp.float64, 0.5, 0.95) if momentum else None
  fo = jax.random.uniform(ks[6], (B, H, length), jnp.float64, 0.0, 0.2) if forget else None
  # The primitive takes the gates as logs: log(momentum decay) and log(1 - forget gate).
  md = None if md is None else jnp.log(md)
  fo = None if fo is None else jnp.log1p(-fo)
  return cfg, s0, ln, q, k, v, lr, md, fo


def _head(tree, b, h):
  return None if tree is None else jax.tree.map(lambda x: x[b, h], tree)


def _rule(md, retrieval="intra_chunk"):
  """Titans' update: momentum (when its decay is given) with lr inside."""
  return chunked.UpdateRule(optimizer="gd" if md is None else "momentum", retrieval=retrieval)


def _reference(cfg, s0, ln, q, k, v, lr, md, fo, chunk, retrieval="intra_chunk"):
  outs, states = np.zeros(q.shape), []
  for b, h in itertools.product(range(B), range(H)):
    o, w = reference.sequential_reference(
        cfg, jax.tree.map(lambda x: x[h], s0), q[b, h], k[b, h], v[b, h], lr[b, h],
        chunk_size=chunk, rule=_rule(md, retrieval), log_mom_decay=_head(md, b, h),
        log_retention=_head(fo, b, h),
        ln=None if ln is None else jax.tree.map(lambda x: x[h], ln))
    outs[b, h] = o
    states.append(w)
  return outs, states


def _assert_state(carry_weights, states):
  for i, (b, h) in enumerate(itertools.product(range(B), range(H))):
    for got, want in zip(jax.tree.leaves(_head(carry_weights, b, h)),
                         jax.tree.leaves(states[i])):
      np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("depth,ln_residual,momentum,forget", [
    (1, False, False, False), (1, True, True, False), (2, False, False, True),
    (2, True, True, True), (3, False, True, True)])
def test_chunk_one_equals_token_recurrence(depth, ln_residual, momentum, forget):
  p = _problem(0, 6, depth, ln_residual, momentum, forget)
  o, carry = chunked.chunked_memory(p[0], p[1], *p[3:7], chunk_size=1, rule=_rule(p[7]),
                                    log_mom_decay=p[7],
                                    log_retention=p[8], ln=p[2])
  ref_o, ref_w = _reference(*p, chunk=1)
  np.testing.assert_allclose(o, ref_o, rtol=1e-10, atol=1e-10)
  _assert_state(carry.weights, ref_w)


@pytest.mark.parametrize("chunk,length", [(4, 8), (3, 10), (8, 5)])
@pytest.mark.parametrize("retrieval", ["intra_chunk", "chunk_start"])
def test_chunked_dual_form_equals_materialized_reference(chunk, length, retrieval):
  p = _problem(1, length, 2, True, True, True)
  o, carry = chunked.chunked_memory(p[0], p[1], *p[3:7], chunk_size=chunk,
                                    rule=_rule(p[7], retrieval), log_mom_decay=p[7],
                                    log_retention=p[8], ln=p[2], remat_group=2)
  ref_o, ref_w = _reference(*p, chunk=chunk, retrieval=retrieval)
  np.testing.assert_allclose(o, ref_o, rtol=1e-10, atol=1e-10)
  _assert_state(carry.weights, ref_w)
  assert int(carry.pos[0, 0]) == length % chunk


def test_single_chunk_is_batch_gradient_descent_from_initial_state():
  """C = L: W_t = S0 - sum_{tau<=t} lr_tau grad loss_tau(S0), written out by hand for a
  linear memory with squared loss: grad_W = 2 k (k W + b - v)^T, grad_b = 2 (k W + b - v)."""
  cfg, s0, _, q, k, v, lr, _, _ = _problem(2, 5, depth=1)
  o, carry = chunked.chunked_memory(cfg, s0, q, k, v, lr, chunk_size=5)
  for b, h in itertools.product(range(B), range(H)):
    w0, b0 = np.asarray(s0[0]["w"][h]), np.asarray(s0[0]["b"][h])
    kk, vv, qq, ll = (np.asarray(a[b, h]) for a in (k, v, q, lr))
    err = kk @ w0 + b0 - vv
    w, bias = w0.copy(), b0.copy()
    for t in range(5):
      w = w - ll[t] * 2 * np.outer(kk[t], err[t])
      bias = bias - ll[t] * 2 * err[t]
      np.testing.assert_allclose(o[b, h, t], qq[t] @ w + bias, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(carry.weights[0]["w"][b, h], w, rtol=1e-10, atol=1e-12)


def test_titans_decay_closed_form_and_momentum_associative_scan():
  """Titans section 3.2: with forgetting, the end-of-chunk state is
  beta_C W_0 - sum_i lr_i (beta_C / beta_i) u_i, beta_i = prod_{j<=i} (1 - alpha_j); the momentum
  recurrence S_t = eta_t S_{t-1} - lr_t u_t equals an associative scan of affine maps."""
  rng = np.random.default_rng(0)
  c = 6
  lr, alpha, eta = rng.uniform(0.1, 0.5, c), rng.uniform(0, 0.3, c), rng.uniform(0.3, 0.9, c)
  co = gates.chunk_coefficients(jnp.asarray(lr), log_retention=jnp.log1p(-jnp.asarray(alpha)))
  g, f_vec = co.coef, co.a_vec
  beta = np.cumprod(1 - alpha)
  np.testing.assert_allclose(f_vec, beta, rtol=1e-12)
  np.testing.assert_allclose(g[-1], lr * beta[-1] / beta, rtol=1e-12)
  # Momentum: scalar-coefficient view (u_t -> unit vectors e_t) via associative scan.
  u = np.eye(c)
  a_seq, b_seq = jnp.asarray(eta), -jnp.asarray(lr)[:, None] * jnp.asarray(u)
  combine = lambda x, y: (x[0] * y[0], y[0][..., None] * x[1] + y[1])
  _, s_scan = jax.lax.associative_scan(combine, (a_seq, b_seq))
  s_loop, s = [], np.zeros(c)
  for t in range(c):
    s = eta[t] * s - lr[t] * u[t]
    s_loop.append(s)
  co = gates.chunk_coefficients(jnp.asarray(lr), log_mom_decay=jnp.log(jnp.asarray(eta)),
                                momentum=True)
  gm, p_vec = co.coef_s, co.p_vec
  np.testing.assert_allclose(s_scan, np.stack(s_loop), rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(-gm, np.stack(s_loop), rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(p_vec, np.cumprod(eta), rtol=1e-12)


def test_causality_of_primitive():
  p = _problem(3, 9, 2, True, True, True)
  o1, _ = chunked.chunked_memory(p[0], p[1], *p[3:7], chunk_size=4, rule=MOM,
                                 log_mom_decay=p[7], log_retention=p[8], ln=p[2])
  bump = lambda x: x.at[:, :, 5:].add(1.0)
  lr2 = p[6].at[:, :, 5:].mul(1.5)
  o2, _ = chunked.chunked_memory(p[0], p[1], bump(p[3]), bump(p[4]), bump(p[5]), lr2,
                                 chunk_size=4, rule=MOM, log_mom_decay=p[7], log_retention=p[8],
                                 ln=p[2])
  np.testing.assert_array_equal(o1[:, :, :5], o2[:, :, :5])
  assert np.abs(o1[:, :, 5:] - o2[:, :, 5:]).max() > 1e-3


def test_padding_equals_truncated_sequence():
  p = _problem(4, 12, 2, False, True, True)
  cut = lambda x: None if x is None else x[:, :, :10]
  o_full, _ = chunked.chunked_memory(p[0], p[1], *p[3:7], chunk_size=4, rule=MOM,
                                     log_mom_decay=p[7], log_retention=p[8])
  o_cut, carry = chunked.chunked_memory(p[0], p[1], *(cut(x) for x in p[3:7]), chunk_size=4,
                                        rule=MOM, log_mom_decay=cut(p[7]),
                                        log_retention=cut(p[8]))
  np.testing.assert_allclose(o_cut, o_full[:, :, :10], rtol=1e-12, atol=1e-12)
  _, ref_w = _reference(p[0], p[1], p[2], *(cut(x) for x in p[3:9]), chunk=4)
  _assert_state(carry.weights, ref_w)   # the padded tokens wrote nothing


def test_decode_steps_equal_parallel_forward():
  p = _problem(5, 7, 2, True, True, True)
  o, carry = chunked.chunked_memory(p[0], p[1], *p[3:7], chunk_size=3, rule=MOM,
                                    log_mom_decay=p[7], log_retention=p[8], ln=p[2])
  c = chunked.init_carry(p[1], B, MOM)
  for t in range(7):
    at = lambda x: x[:, :, t]
    ot, c = chunked.decode_step(p[0], c, *(at(x) for x in p[3:7]), chunk_size=3, rule=MOM,
                                log_mom_decay=at(p[7]), log_retention=at(p[8]), ln=p[2])
    np.testing.assert_allclose(ot, o[:, :, t], rtol=1e-10, atol=1e-12)
  for got, want in zip(jax.tree.leaves(c), jax.tree.leaves(carry)):
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_gradients_through_inner_loop_match_finite_differences():
  cfg, s0, ln, q, k, v, lr, md, fo = _problem(6, 6, 2, True, True, True)

  def objective(s, lr_):
    o, _ = chunked.chunked_memory(cfg, s, q, k, v, lr_, chunk_size=2, rule=MOM, log_mom_decay=md,
                                  log_retention=fo, ln=ln)
    return jnp.sum(jnp.sin(o))

  g_s, g_lr = jax.grad(objective, argnums=(0, 1))(s0, lr)
  rng = np.random.default_rng(1)
  for _ in range(3):
    ds = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape)), s0)
    dlr = jnp.asarray(rng.normal(size=lr.shape)) * 0.1
    eps = 1e-6
    plus = objective(jax.tree.map(lambda a, b: a + eps * b, s0, ds), lr + eps * dlr)
    minus = objective(jax.tree.map(lambda a, b: a - eps * b, s0, ds), lr - eps * dlr)
    fd = (plus - minus) / (2 * eps)
    analytic = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g_s), jax.tree.leaves(ds)))
    analytic = analytic + jnp.vdot(g_lr, dlr)
    np.testing.assert_allclose(analytic, fd, rtol=1e-6)


def test_bad_arguments_raise_value_error_naming_the_argument():
  cfg, s0, ln, q, k, v, lr, _, _ = _problem(7, 4)
  with pytest.raises(ValueError, match="chunk_size"):
    chunked.chunked_memory(cfg, s0, q, k, v, lr, chunk_size=0)
  with pytest.raises(ValueError, match="k must have shape"):
    chunked.chunked_memory(cfg, s0, q, k[:, :, :3], v, lr, chunk_size=2)
  with pytest.raises(ValueError, match="lr"):
    chunked.chunked_memory(cfg, s0, q, k, v, -lr, chunk_size=2)
  with pytest.raises(ValueError, match="lr must have shape"):
    chunked.chunked_memory(cfg, s0, q, k, v, lr[..., :2], chunk_size=2)
  with pytest.raises(ValueError, match="retrieval"):
    chunked.UpdateRule(retrieval="later")
  with pytest.raises(ValueError, match="log_retention"):
    chunked.chunked_memory(cfg, s0, q, k, v, lr, chunk_size=2, log_retention=lr * 0 + 0.5)
  with pytest.raises(ValueError, match="inner_loss"):
    chunked.UpdateRule(inner_loss="cosine")
  with pytest.raises(ValueError, match="state0"):
    chunked.chunked_memory(cfg, jax.tree.map(lambda x: x[:1], s0), q, k, v, lr, chunk_size=2)
  with pytest.raises(ValueError, match="depth"):
    mm.MemoryModelConfig(depth=0)


def test_remat_grouping_leaves_gradients_unchanged():
  cfg, s0, ln, q, k, v, lr, md, fo = _problem(8, 12, 2, True, True, True)

  def grads(remat_group):
    def objective(s, q_):
      o, _ = chunked.chunked_memory(cfg, s, q_, k, v, lr, chunk_size=2, rule=MOM,
                                    log_mom_decay=md,
                                    log_retention=fo, ln=ln, remat_group=remat_group)
      return jnp.sum(jnp.sin(o))
    return jax.jit(jax.grad(objective, argnums=(0, 1)))(s0, q)

  reference = grads(0)
  for group in (1, 3, 4):
    for got, want in zip(jax.tree.leaves(grads(group)), jax.tree.leaves(reference)):
      np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make", ["titans", "ttt_mlp", "tnt"])
def test_batch_sharded_input_under_an_explicit_mesh_equals_unsharded(make):
  """jax.make_mesh's default axes are Explicit: a batch-sharded input then meets the memory's
  fresh carry, which must not be a replicated [B, ...] broadcast (vmap refuses mismatched
  batch shardings). Float64, 4 of the 8 fake devices."""
  from flax import nnx
  from jax.sharding import AxisType, NamedSharding
  from jax.sharding import PartitionSpec as P

  from tnx.memory import titans, ttt
  from tnx.tnt import TNTConfig, TNTMemory
  rngs, d = nnx.Rngs(0), 16
  layer = {
      "titans": lambda: titans.TitansMemory(d, titans.TitansConfig(
          num_heads=2, chunk_size=4, dtype=jnp.float64, param_dtype=jnp.float64), rngs=rngs),
      "ttt_mlp": lambda: ttt.TTTLayer(d, ttt.TTTConfig(
          kind="mlp", num_heads=2, chunk_size=4, dtype=jnp.float64,
          param_dtype=jnp.float64), rngs=rngs),
      "tnt": lambda: TNTMemory(d, TNTConfig(
          num_heads=2, global_chunk_size=16, local_chunk_sizes=(4,), shard_length=16,
          dtype=jnp.float64, param_dtype=jnp.float64), rngs=rngs),
  }[make]()
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 32, d), jnp.float64)
  ref = layer(x)
  mesh = jax.make_mesh((4,), ("data",), axis_types=(AxisType.Explicit,),
                       devices=jax.devices()[:4])
  with jax.set_mesh(mesh):
    y = jax.jit(lambda m, x: m(x))(layer, jax.device_put(x, NamedSharding(mesh, P("data"))))
  np.testing.assert_allclose(np.asarray(y), np.asarray(ref), rtol=1e-12, atol=1e-12)
