"""select(): the exact method against a hand-built reference, landmark propagation exact when
the landmark embeddings span the pool, Adam preconditioning, second order, sharded = unsharded
on the 8 fake CPU devices, and the argument errors (each naming the argument)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tnx import sharding as shd
from tnx.selection.influence import grads, optimizer, sandbox, weights
from tnx.selection.influence.pipeline import SelectionConfig, select

CFG = sandbox.SandboxConfig(dim=4, hidden=5, num_classes=3, num_domains=3, per_domain=8,
                            target_size=4, heldout_size=2)
LOSS = sandbox.mlp_loss


@pytest.fixture(scope="module")
def problem():
  data = sandbox.make_sandbox(CFG, jnp.float64)
  params = sandbox.mlp_init(0, 4, 5, 3, jnp.float64)
  tx = optax.adam(1e-2)

  @jax.jit
  def warm(params, state):
    updates, state = tx.update(jax.grad(sandbox.mean_loss)(params, data["pool"]), state, params)
    return optax.apply_updates(params, updates), state

  state = tx.init(params)
  for _ in range(2):
    params, state = warm(params, state)
  step = optimizer.adam_affine(state, params, learning_rate=1e-2, b1=0.9, b2=0.999, eps=1e-8)
  # Only the output layer: 18 parameters, fewer than the 24 samples.
  subset = grads.ParamSubset(params, {"w1": False, "b1": False, "w2": True, "b2": True})
  g_s = grads.per_example_grads(LOSS, params, data["pool"], subset=subset,
                                precondition=subset.flatten(step.a))
  g_t = jnp.mean(grads.per_example_grads(LOSS, params, data["target"], subset=subset), axis=0)
  return params, data, step, subset, g_s, g_t


def test_exact_selection_is_top_k_of_the_adam_influences(problem):
  params, data, step, subset, g_s, g_t = problem
  cfg = SelectionConfig(k=5, num_landmarks=None)
  sel = select(LOSS, params, data["pool"], data["target"], cfg, step=step, subset=subset)
  p = np.asarray(g_s @ g_t)
  np.testing.assert_allclose(sel.diagnostics["scores"], p, rtol=1e-10)
  idx, w, lam = weights.robust_first_order(p, 5)
  assert sorted(sel.indices) == sorted(idx) == sorted(np.argsort(-p)[:5])
  np.testing.assert_allclose(sel.weights, w, rtol=1e-10)
  assert sel.weights.sum() == pytest.approx(24) and np.count_nonzero(sel.weights) == 5


def test_landmark_propagation_is_exact_when_landmarks_span_the_pool(problem):
  params, data, step, subset, g_s, g_t = problem
  # Embeddings = the preconditioned gradients themselves: p = E g_T is linear in E, and 20
  # random landmarks span the (<= 18)-dimensional row space.
  cfg = SelectionConfig(k=5, num_landmarks=20, kernel="linear", damp=1e-10)
  sel = select(LOSS, params, data["pool"], data["target"], cfg, step=step, subset=subset,
               embeddings=g_s)
  np.testing.assert_allclose(sel.diagnostics["scores"], g_s @ g_t, rtol=1e-6, atol=1e-8)
  assert sorted(sel.indices) == sorted(np.argsort(-np.asarray(g_s @ g_t))[:5])


def test_second_order_exact_matches_the_qp_on_exact_terms(problem):
  params, data, step, subset, g_s, g_t = problem
  cfg = SelectionConfig(k=4, num_landmarks=None, order="second")
  sel = select(LOSS, params, data["pool"], data["target"], cfg, step=step, subset=subset)
  target_loss = grads.mean_loss_fn(LOSS, data["target"])
  hess = jax.jit(jax.hessian(lambda v: target_loss(subset.unflatten(v, params) | {
      "w1": params["w1"], "b1": params["b1"]})))(subset.flatten(params))
  lr = float(step.lr)
  p2 = g_s @ (g_t - lr * hess @ subset.flatten(step.b))
  q = g_s @ hess @ g_s.T / 24
  np.testing.assert_allclose(sel.diagnostics["scores"], p2, rtol=1e-10)
  np.testing.assert_allclose(sel.diagnostics["q_landmarks"], 0.5 * (q + q.T), rtol=1e-8,
                             atol=1e-14)
  assert sel.indices.size == 4 and sel.weights.sum() == pytest.approx(24, rel=1e-9)


def test_sharded_equals_unsharded(problem):
  params, data, step, subset, _, _ = problem
  emb = data["pool"]["x"]
  cfg = SelectionConfig(k=6, num_landmarks=10, landmarks="farthest", sketch="srht",
                        sketch_dim=8, normalize=True)
  one = select(LOSS, params, data["pool"], data["target"], cfg, step=step, subset=subset,
               embeddings=emb)
  many = select(LOSS, params, data["pool"], data["target"], cfg, step=step, subset=subset,
                embeddings=emb, mesh=shd.make_mesh())
  np.testing.assert_allclose(many.diagnostics["scores"], one.diagnostics["scores"],
                             rtol=1e-10, atol=1e-13)
  np.testing.assert_array_equal(many.indices, one.indices)
  np.testing.assert_allclose(many.weights, one.weights, rtol=1e-10)


def test_argument_errors(problem):
  params, data, step, subset, _, _ = problem
  pool, tgt = data["pool"], data["target"]
  base = SelectionConfig(k=3, num_landmarks=5)
  emb = pool["x"]
  for k in (0, -2):
    with pytest.raises(ValueError, match="k must be a positive integer"):
      SelectionConfig(k=k)
  with pytest.raises(ValueError, match="k must be an integer with 1 <= k <= 24"):
    select(LOSS, params, pool, tgt, dataclasses.replace(base, k=25), embeddings=emb)
  with pytest.raises(ValueError, match="num_landmarks=30 exceeds the 24 samples"):
    select(LOSS, params, pool, tgt, dataclasses.replace(base, num_landmarks=30), embeddings=emb)
  for bad in (0.0, -1.0):
    with pytest.raises(ValueError, match="damp must be a finite number > 0"):
      SelectionConfig(k=3, damp=bad)
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
      SelectionConfig(k=3, sigma=bad)
  empty = jax.tree.map(lambda a: a[:0], tgt)
  with pytest.raises(ValueError, match="target must hold at least one example"):
    select(LOSS, params, pool, empty, base, embeddings=emb)
  with pytest.raises(ValueError, match="embeddings .* are needed"):
    select(LOSS, params, pool, tgt, base)
  with pytest.raises(ValueError, match="embeddings must have shape"):
    select(LOSS, params, pool, tgt, base, embeddings=emb[:5])
  with pytest.raises(ValueError, match="order='second' needs exact gradients"):
    SelectionConfig(k=3, order="second", sketch="srht")
  with pytest.raises(ValueError, match="order='second' needs target_mode='mean'"):
    SelectionConfig(k=3, order="second", target_mode="round_robin")
  with pytest.raises(ValueError, match="order='second' needs the optimizer step"):
    select(LOSS, params, pool, tgt, SelectionConfig(k=3, num_landmarks=None, order="second"))
