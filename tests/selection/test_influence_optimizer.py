"""The optimizer's affine form against real optax steps: SGD (momentum, Nesterov, decay) exactly;
Adam/AdamW with the frozen second moment; and the Adam influences as a finite difference of one
real optax AdamW step's effect on the target loss (tnx.train's optimizer, schedule, mask)."""

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
import pytest

from tnx.selection.influence import grads, optimizer, sandbox
from tnx.train import optim

CFG = sandbox.SandboxConfig(dim=4, hidden=5, num_classes=3, num_domains=3, per_domain=4,
                            target_size=5, heldout_size=2)


@pytest.fixture(scope="module")
def problem():
  data = sandbox.make_sandbox(CFG, jnp.float64)
  params = sandbox.mlp_init(0, 4, 5, 3, jnp.float64)
  return params, data["pool"], data["target"]


def _opt_config(b2=0.95):
  return mlc.ConfigDict(dict(peak_lr=1e-3, warmup_steps=2, final_lr_ratio=0.1, b1=0.9, b2=b2,
                             eps=1e-8, weight_decay=0.1, no_decay=("b1", "b2"), clip=1.0))


_WARM_STEPS = {}


def _warm(tx, params, pool, steps=4, state=None):
  if id(tx) not in _WARM_STEPS:
    @jax.jit
    def one(params, state, idx):
      g = jax.grad(sandbox.mean_loss)(params, jax.tree.map(lambda a: a[idx], pool))
      updates, state = tx.update(g, state, params)
      return optax.apply_updates(params, updates), state
    _WARM_STEPS[id(tx)] = (tx, one)
  one = _WARM_STEPS[id(tx)][1]
  state = tx.init(params) if state is None else state
  for t in range(steps):
    params, state = one(params, state, jnp.arange(t % 3, 12, 3))
  return params, state


def _rand_like(params, seed, scale=1.0):
  leaves, treedef = jax.tree.flatten(params)
  rng = np.random.default_rng(seed)
  return jax.tree.unflatten(treedef, [jnp.asarray(scale * rng.standard_normal(x.shape))
                                      for x in leaves])


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_affine_equals_a_real_step(problem, nesterov):
  params, pool, _ = problem
  tx = optax.chain(optax.add_decayed_weights(0.01), optax.sgd(0.05, momentum=0.9,
                                                              nesterov=nesterov))
  params, state = _warm(tx, params, pool)
  g = _rand_like(params, 1)
  updates, _ = tx.update(g, state, params)
  step = optimizer.sgd_affine(state, params, learning_rate=0.05, momentum=0.9,
                              nesterov=nesterov, weight_decay=0.01)
  assert _max_diff(step.apply(params, g), optax.apply_updates(params, updates)) < 1e-14


def test_adam_affine_equals_the_frozen_moment_step_and_approaches_the_real_one(problem):
  params, pool, _ = problem
  opt = _opt_config()
  tx = optim.make_optimizer(opt, total_steps=20)
  params, state = _warm(tx, params, pool)
  step = optimizer.adam_affine(state, params, learning_rate=optim.schedule(opt, 20), b1=0.9,
                               b2=0.95, eps=1e-8, weight_decay=0.1,
                               weight_decay_mask=lambda p: optim.decay_mask(p, exclude=("b1",
                                                                                      "b2")))
  adam = [s for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(
      s, optax.ScaleByAdamState)) if isinstance(s, optax.ScaleByAdamState)][0]
  t = int(adam.count) + 1
  lr = optim.schedule(opt, 20)(adam.count)  # float32, as optax evaluates it
  g = _rand_like(params, 2)
  mask = optim.decay_mask(params, exclude=("b1", "b2"))

  def frozen(p, m, v, g, msk):  # Adam's next step with v' = b2 v (no new-gradient term)
    m1 = 0.9 * m + 0.1 * g
    upd = (m1 / (1 - 0.9**t)) / (jnp.sqrt(0.95 * v / (1 - 0.95**t)) + 1e-8)
    return p - lr * (upd + jnp.where(msk, 0.1 * p, 0.0))
  manual = jax.jit(lambda *t: jax.tree.map(frozen, *t))(params, adam.mu, adam.nu, g, mask)
  apply = jax.jit(step.apply)
  assert _max_diff(apply(params, g), manual) < 1e-14
  # The real step adds (1 - b2) g^2 to v: the gap shrinks like g^2.
  gaps = []
  update = jax.jit(tx.update)
  for scale in (1e-2, 1e-3):
    gs = jax.tree.map(lambda x: scale * x, g)
    updates, _ = update(gs, state, params)
    gaps.append(_max_diff(apply(params, gs), optax.apply_updates(params, updates)))
  assert gaps[1] < gaps[0] / 50


def test_stored_second_moment_gap_shrinks_as_b2_tends_to_one(problem):
  params0, pool, _ = problem
  # b2 injected as a runtime hyperparameter: one compiled warm-up for the three values.
  tx = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3, b1=0.9, b2=0.9)
  update = jax.jit(tx.update)
  gaps = []
  for b2 in (0.9, 0.99, 0.999):
    state = tx.init(params0)
    state.hyperparams["b2"] = jnp.asarray(b2, jnp.float32)
    params, state = _warm(tx, params0, pool, steps=3, state=state)
    step = optimizer.adam_affine(state, params, b2=b2, second_moment="stored")
    g = _rand_like(params, 3, 1e-4)
    updates, _ = update(g, state, params)
    gaps.append(_max_diff(step.apply(params, g), optax.apply_updates(params, updates)))
  assert gaps[0] > 5 * gaps[1] > 25 * gaps[2]


def test_adam_influences_are_a_finite_difference_of_a_real_adamw_step(problem):
  """p_Adam,i = (G_S diag(a) g_T)_i equals, to first order in lr, -(n / lr) times the
  derivative in w_i of L_T(real AdamW step on the w-weighted pool gradient) at w = 0."""
  params, pool, tgt = problem
  n = pool["x"].shape[0]
  opt = _opt_config()
  opt.peak_lr = 1e-4
  tx = optim.make_optimizer(opt, total_steps=20)
  warm, state = _warm(tx, params, pool)
  mask = lambda p: optim.decay_mask(p, exclude=("b1", "b2"))
  hyper = dict(learning_rate=optim.schedule(opt, 20), b1=0.9, b2=0.95, eps=1e-8,
               weight_decay=0.1, weight_decay_mask=mask)
  subset = grads.ParamSubset(warm)
  g_s = grads.per_example_grads(sandbox.mlp_loss, warm, pool, subset=subset, chunk_size=4)
  g_t = jnp.mean(grads.per_example_grads(sandbox.mlp_loss, warm, tgt, subset=subset,
                                         chunk_size=4), axis=0)

  @jax.jit
  def effect(w):
    g = jax.grad(lambda p: jnp.sum(w * jax.vmap(lambda e: sandbox.mlp_loss(p, e))(pool))
                 / n)(warm)
    updates, _ = tx.update(g, state, warm)
    return sandbox.mean_loss(optax.apply_updates(warm, updates), tgt)

  eps = 1e-2
  fd = np.array([(effect(eps * e) - effect(-eps * e)) / (2 * eps) for e in jnp.eye(n)])
  errors = {}
  for convention in ("decayed", "stored"):
    step = optimizer.adam_affine(state, warm, second_moment=convention, **hyper)
    p_adam = (g_s * subset.flatten(step.a)) @ g_t
    errors[convention] = np.max(np.abs(-fd * n / float(step.lr) - p_adam)) / np.max(
        np.abs(p_adam))
  assert errors["decayed"] < 2e-3       # the O(lr) Taylor remainder at lr ~ 1e-4
  # Using the stored v (not b2 v) misses the real step's derivative by ~ 1 - sqrt(b2).
  assert errors["stored"] == pytest.approx(1 - np.sqrt(0.95), rel=0.1)


def test_hyperparameters_from_injected_state_and_missing_ones(problem):
  params, pool, _ = problem
  tx = optax.inject_hyperparams(optax.adamw)(learning_rate=3e-3, b1=0.8, b2=0.9, eps=1e-7,
                                             weight_decay=0.05)
  params, state = _warm(tx, params, pool, steps=2)
  injected = optimizer.adam_affine(state, params)
  explicit = optimizer.adam_affine(state, params, learning_rate=3e-3, b1=0.8, b2=0.9,
                                   eps=1e-7, weight_decay=0.05)
  assert _max_diff(injected.a, explicit.a) == 0 and _max_diff(injected.b, explicit.b) == 0
  assert float(injected.lr) == pytest.approx(3e-3)
  plain = optax.adam(1e-3).init(params)
  with pytest.raises(ValueError, match="b1 is not stored"):
    optimizer.adam_affine(plain, params, learning_rate=1e-3)
  with pytest.raises(ValueError, match="exactly one optax ScaleByAdamState"):
    optimizer.adam_affine(optax.sgd(0.1).init(params), params, learning_rate=1.0)
  with pytest.raises(ValueError, match="second_moment must be one of"):
    optimizer.adam_affine(plain, params, learning_rate=1e-3, b1=0.9, b2=0.9, eps=1e-8,
                          second_moment="fresh")
  assert optimizer.affine_from_optax(plain, params, learning_rate=1e-3, b1=0.9, b2=0.999,
                                     eps=1e-8).kind == "adam"
  assert optimizer.affine_from_optax(optax.sgd(0.1).init(params), params,
                                     learning_rate=0.1).kind == "sgd"
  with pytest.raises(ValueError, match="learning_rate must be a finite number > 0"):
    optimizer.gd_affine(params, 0.0)
