"""Taylor expansion of the target loss after one step: residuals of order lr^2 (first order)
and lr^3 (second order) for gradient descent and for Adam, and the (p, Q) form of the
w-dependent part."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tnx.selection.influence import grads, optimizer, sandbox, scores

CFG = sandbox.SandboxConfig(dim=4, hidden=5, num_classes=3, num_domains=3, per_domain=4,
                            target_size=6, heldout_size=2)


@pytest.fixture(scope="module")
def problem():
  data = sandbox.make_sandbox(CFG, jnp.float64)
  params = sandbox.mlp_init(0, 4, 5, 3, jnp.float64)
  subset = grads.ParamSubset(params)
  g_s = grads.per_example_grads(sandbox.mlp_loss, params, data["pool"], subset=subset)
  target_loss = grads.mean_loss_fn(sandbox.mlp_loss, data["target"])
  g_t = subset.flatten(jax.jit(jax.grad(target_loss))(params))
  hvp = grads.flat_hvp_fn(target_loss, params, subset)
  return params, data, subset, g_s, g_t, hvp, jax.jit(target_loss)


def _slope(lrs, residuals):
  return np.polyfit(np.log(lrs), np.log(residuals), 1)[0]


@pytest.mark.parametrize("kind", ["gd", "adam"])
def test_taylor_residual_orders(problem, kind):
  params, data, subset, g_s, g_t, hvp, target_loss = problem
  n = g_s.shape[0]
  if kind == "gd":
    a_p, b_p = jnp.ones(subset.size), jnp.zeros(subset.size)
  else:
    tx = optax.adam(1e-2)
    state = jax.jit(lambda p: tx.update(jax.grad(sandbox.mean_loss)(p, data["pool"]),
                                        tx.init(p), p)[1])(params)
    step = optimizer.adam_affine(state, params, learning_rate=1.0, b1=0.9, b2=0.999, eps=1e-8)
    a_p, b_p = subset.flatten(step.a), subset.flatten(step.b)
  w = jnp.asarray(np.random.default_rng(1).dirichlet(np.ones(n)) * n)
  d = scores.weighted_direction(g_s, w, a_p, b_p)
  flat0 = subset.flatten(params)

  @jax.jit
  def residuals(lr):  # |true change - first-order| and |true change - second-order|
    true = target_loss(subset.unflatten(flat0 - lr * d, params)) - target_loss(params)
    return (jnp.abs(true - scores.predicted_change(g_t, None, d, lr)),
            jnp.abs(true - scores.predicted_change(g_t, hvp, d, lr)))

  lrs = np.array([1e-1, 3e-2, 1e-2, 3e-3]) * (1.0 if kind == "gd" else 0.1)
  r1, r2 = np.array([residuals(lr) for lr in lrs]).T
  assert _slope(lrs, r1) == pytest.approx(2.0, abs=0.15)
  assert _slope(lrs, r2) == pytest.approx(3.0, abs=0.2)
  # The w-dependent part equals (lr/n) (-p^T w + (lr/2) w^T Q w).
  @jax.jit
  def both_sides(lr):
    pre = g_s * a_p
    p = pre @ scores.second_order_target(g_t, hvp, b_p, lr)
    q = scores.interaction_matrix(pre, hvp, n)
    d0 = scores.weighted_direction(g_s, jnp.zeros(n), a_p, b_p)
    lhs = scores.predicted_change(g_t, hvp, d, lr) - scores.predicted_change(g_t, hvp, d0, lr)
    return lhs, lr / n * scores.objective(p, q, w, lr)
  lhs, rhs = both_sides(float(lrs[1]))
  assert float(lhs) == pytest.approx(float(rhs), rel=1e-10)
