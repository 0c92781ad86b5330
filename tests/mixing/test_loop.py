"""The K-domain loop: SGD noise floor against its closed form, limits (K = 1, identical
domains), the qualitative effects of FGLS / VA / both / ERMA at small size with fixed seeds,
NNX modules, no recompilation when b changes, vmap == Python loop, and input validation."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tnx.mixing import linreg, tasks
from tnx.mixing import loop as L
from tnx.mixing import montecarlo as MC
from tnx.mixing import sampling as S
from tnx.mixing import weights as W
from tnx.mixing.pools import Pools

GRID = ("uniform", "loss", "sampling", "both")


@functools.partial(jax.jit, static_argnames=("steps", "cfg"))
def _grid_runs(keys, inputs, switches, pi, lr, *, steps, cfg):
  """Every method (switches [M]) on every seed (keys [N], data [N, ...]) in one program;
  the same shapes and config reuse the compiled program across tests."""
  d = inputs[0].shape[-1]

  def one(key, inp, sw):
    theta_star, train, val = inp
    ev = lambda p: {"err": jnp.sum((p - theta_star) ** 2)}
    loop = L.Loop(linreg.squared_loss, optax.sgd(lr), cfg, ev)
    return loop.run(key, jnp.zeros(d), train, val, pi, steps=steps, switches=sw)

  per_method = lambda sw: jax.vmap(lambda k, x: one(k, x, sw))(keys, inputs)
  return jax.vmap(per_method)(switches)


def _run_methods(problem, seeds, steps, lr, methods=GRID, cfg=None):
  """{method: (final states, traces)} on the same seeds (common random numbers)."""
  cfg = cfg or L.MixingConfig(batch_size=32, loss_rule="fgls", sampling_rule="va")
  inputs = MC.stack([linreg.sample(s, problem) for s in seeds])
  states, traces = _grid_runs(MC.seed_keys(len(seeds)), inputs, L.method_switches(methods),
                              jnp.asarray(problem.pi), lr, steps=steps, cfg=cfg)
  pick = lambda t, i: jax.tree.map(lambda a: a[i], t)
  return {m: (pick(states, i), pick(traces, i)) for i, m in enumerate(methods)}


# ----------------------------------------------------------------------------- noise floor
def test_sgd_noise_floor_and_va_reduction():
  """Item 6: constant-step SGD started at theta_w settles at (eta/2) tr(H^{-1} Q) (within 15%);
  the VA allocation lowers the floor by the predicted factor."""
  problem = linreg.make_problem(4, (1.0, 100.0), reading="R1", n_train=200, n_val=2)
  _, train, val = linreg.sample(0, problem)
  pi, w = jnp.asarray(problem.pi), jnp.ones(2)
  theta_w = linreg.weighted_ls(train, W.per_example_weights(pi, w, train.n.astype(jnp.float64)))
  _, v2 = linreg.empirical_grad_moments(theta_w, train)
  eta, steps = 0.02, 4000
  b_prop = np.array([16, 16])
  b_va = np.asarray(S.allocate(pi, w, jnp.sqrt(v2), 32, "greedy"))
  assert b_va[0] > 25  # the noisy domain gets most of the batch
  cfg = L.MixingConfig(batch_size=32, sampling_rule="fixed", batch_counts=(16, 16))
  ev = lambda p: {"dev": jnp.sum((p - theta_w) ** 2)}
  loop = L.Loop(linreg.squared_loss, optax.sgd(eta), cfg, ev)
  fn = lambda key, b0: loop.run(key, theta_w, train, val, pi, steps=steps, b0_K=b0)[1]["dev"]
  dev = np.asarray(MC.run_vmapped(fn, MC.seed_keys(16), jnp.asarray(np.stack([b_prop, b_va]))))
  floors = {}
  for i, (name, b) in enumerate((("prop", b_prop), ("va", b_va))):
    h, q = linreg.sgd_quadratic(theta_w, train, pi, w, jnp.asarray(b, jnp.float64))
    pred = float(linreg.sgd_noise_floor(eta, h, q))
    floors[name] = (dev[i, :, 20:].mean(), pred)
    assert abs(floors[name][0] / pred - 1) < 0.15, (name, floors[name])
  measured = floors["va"][0] / floors["prop"][0]
  predicted = floors["va"][1] / floors["prop"][1]
  assert measured < 0.85 and abs(measured / predicted - 1) < 0.15, (measured, predicted)
  v = jnp.sqrt(v2)
  np.testing.assert_allclose(predicted, S.minibatch_variance(pi, w, v2, jnp.asarray(b_va, float))
                             / S.minibatch_variance(pi, w, v2, jnp.asarray(b_prop, float)),
                             rtol=0.05)
  assert float(S.optimal_variance(pi, w, v, 32)) <= float(
      S.minibatch_variance(pi, w, v2, jnp.asarray(b_va, float)))


# ----------------------------------------------------------------------------- limits
def test_single_domain_every_method_is_the_same_run():
  """Item 8, K = 1: FGLS and ERMA weights stay 1 and VA keeps b = B, so all methods coincide."""
  problem = linreg.make_problem(3, (1.0,), n_train=300, n_val=50)
  runs = _run_methods(problem, [0, 1], 300, 0.05)
  ref = runs["uniform"][0].params
  for name, (state, trace) in runs.items():
    np.testing.assert_allclose(state.params, ref, rtol=1e-9, err_msg=name)
    np.testing.assert_allclose(trace["w"], 1.0, rtol=1e-12)
    np.testing.assert_array_equal(trace["b"], 32)
  one = jnp.ones(1)
  np.testing.assert_allclose(W.erma_update(one, one, jnp.array([3.0]), jnp.array([7.0]),
                                           gamma1=0.5, gamma2=2.0), one, rtol=1e-12)


def test_identical_domains_reduce_to_uniform():
  """Items 8-9: two identical domains (equal sigma and Sigma): GLS weights are pooled OLS, FGLS
  stays uniform up to sampling error, VA keeps b ~ pi, and loss-only matches Uniform."""
  problem = linreg.make_problem(10, (1.0, 1.0), reading="R1", n_train=2000, n_val=500)
  w_gls = W.gls_weights(jnp.asarray(problem.sigma2), jnp.array([2000.0, 2000.0]),
                        jnp.asarray(problem.pi))
  np.testing.assert_allclose(w_gls, [1.0, 1.0], rtol=1e-12)
  runs = _run_methods(problem, [10, 11, 12, 13, 14, 15], 3000, 0.01)  # shapes as r1_runs
  w = np.asarray(runs["both"][1]["w"][:, -20:])
  assert np.all(np.abs(w - 1) < 0.1), w.min()
  b = np.asarray(runs["both"][1]["b"][:, -20:])
  assert np.all(np.abs(b - 16) <= 3) and abs(b.mean() - 16) < 1
  err = {k: np.asarray(v[1]["err"][:, -30:]).mean() for k, v in runs.items()}
  assert abs(err["loss"] / err["uniform"] - 1) < 0.15, err


# ----------------------------------------------------------------------------- qualitative
@pytest.fixture(scope="module")
def r1_runs():
  """Fig. 1 at small size: R1, C = (1, 100) so sigma^2 = (1, 0.01), d = 10, n = 2000 + 500."""
  problem = linreg.make_problem(10, (1.0, 100.0), reading="R1", n_train=2000, n_val=500)
  return problem, _run_methods(problem, [0, 1, 2, 3, 4, 5], 3000, 0.01)


def _final(trace, frac=0.1):
  e = np.asarray(trace["err"])
  return e[:, -max(1, int(frac * e.shape[1])):].mean()


def test_fgls_reaches_gls_error_and_weight_ratio(r1_runs):
  """Item 12: FGLS ends far below Uniform, near d s* (+ its SGD floor), with w2/w1 ~ 100."""
  problem, runs = r1_runs
  ref = linreg.reference_errors(problem)
  uni, loss = _final(runs["uniform"][1]), _final(runs["loss"][1])
  assert loss < 0.2 * uni and loss < 3 * ref["gls"], (loss, uni, ref)
  ratio = np.asarray(runs["loss"][1]["w"][:, -1, 1] / runs["loss"][1]["w"][:, -1, 0])
  assert np.all((ratio > 60) & (ratio < 160)), ratio


def test_va_lowers_plateau_and_drifts(r1_runs):
  """Item 13: VA's plateau is below proportional sampling's, and b(t) drifts from near
  proportional (far from the optimum v_i ~ C_i ||delta||) to the noisy domain."""
  _, runs = r1_runs
  assert _final(runs["sampling"][1]) < 0.9 * _final(runs["uniform"][1])
  b = np.asarray(runs["sampling"][1]["b"])
  assert b[:, 0, 0].mean() < 22 and b[:, -1, 0].mean() > 26, (b[:, 0, 0], b[:, -1, 0])


def test_both_is_best(r1_runs):
  """Item 14: FGLS + VA is never worse than the better single method (up to seed noise)."""
  _, runs = r1_runs
  err = {k: _final(v[1]) for k, v in runs.items()}
  assert err["both"] <= 1.05 * min(err["loss"], err["sampling"])
  assert err["both"] == min(err.values()), err
  # with GLS weights VA now samples the *quieter* domain more (b ~ pi w v, w ~ 1/sigma^2)
  assert np.asarray(runs["both"][1]["b"][:, -1, 1]).mean() > 24


def test_erma_moves_weight_from_label_noise_and_va_stays_near_pi():
  """Item 15 (logistic, shared inputs, flips (0.4, 0.0)): ERMA shifts weight to the clean
  domain and improves the clean test log-loss;
  VA's b stays within 25% of pi (in the R1 regression it moves to ~90%)."""
  pi = jnp.array([0.5, 0.5])
  sets = [tasks.logistic_domains(s, flip=(0.4, 0.0), n_train=1000, n_val=300, n_test=500)
          for s in range(4)]
  inputs = MC.stack(sets)
  cfg = L.MixingConfig(batch_size=32, loss_rule="erma", sampling_rule="va")

  def fn(key, inp, sw):
    _, train, val, test = inp
    loop = L.Loop(tasks.logistic_loss, optax.sgd(0.05), cfg,
                  lambda p: tasks.logistic_test_metrics(p, test, pi))
    return loop.run(key, jnp.zeros(10), train, val, pi, steps=1500, switches=sw)[1]

  names = ("uniform", "loss", "sampling")
  out = MC.run_vmapped(fn, MC.seed_keys(4), L.method_switches(names), inputs=inputs)
  res = {"uniform": 0, "erma": 1, "va": 2}
  res = {k: jax.tree.map(lambda a, i=i: a[i], out) for k, i in res.items()}
  w = np.asarray(res["erma"]["w"][:, -1])
  assert np.all(w[:, 1] > 1.2 * w[:, 0]), w
  ll = {k: np.asarray(v["test_logloss"][:, -10:]).mean() for k, v in res.items()}
  assert ll["erma"] < ll["uniform"] - 0.01, ll
  b = np.asarray(res["va"]["b"][:, -10:]) / 32  # measured ~0.58 for the noisy domain
  assert np.all(np.abs(b - 0.5) <= 0.125), b.mean((0, 1))


# ----------------------------------------------------------------------------- mechanics
def test_changing_b_does_not_recompile():
  problem = linreg.make_problem(3, (1.0, 5.0), n_train=50, n_val=10)
  _, train, _ = linreg.sample(0, problem)
  pi = jnp.asarray(problem.pi)
  loop = L.Loop(linreg.squared_loss, optax.sgd(0.01), L.MixingConfig(batch_size=8,
                                                                   max_batch=12))
  step = jax.jit(chex.assert_max_traces(loop.step, n=1))
  state = loop.init(jax.random.key(0), jnp.zeros(3), train, pi)
  for b in ([4, 4], [1, 7], [6, 6], [2, 9]):  # sum may be below max_batch: masked slots
    state = state._replace(mix=state.mix._replace(b=jnp.asarray(b, jnp.int32)))
    state, m = step(state, jax.random.key(len(b)), train, pi)
    assert np.isfinite(float(m["objective"]))


def test_vmapped_monte_carlo_equals_python_loop():
  problem = linreg.make_problem(2, (1.0, 10.0), n_train=30, n_val=10)
  inputs = MC.stack([linreg.sample(s, problem) for s in range(3)])
  cfg = L.MixingConfig(batch_size=4, loss_rule="fgls")

  def fn(key, inp, lr):
    _, train, val = inp
    loop = L.Loop(linreg.squared_loss, optax.sgd(lr), cfg)
    return loop.run(key, jnp.zeros(2), train, val, jnp.asarray(problem.pi), steps=20)[1]["w"]

  lrs = jnp.array([0.01, 0.05])
  a = MC.run_vmapped(fn, MC.seed_keys(3), lrs, inputs=inputs)
  b = MC.run_loop(fn, MC.seed_keys(3), lrs, inputs=inputs)
  assert a.shape == (2, 3, 2, 2)
  np.testing.assert_allclose(a, b, rtol=1e-9)
  mean, se = MC.mean_se(a, axis=1)
  assert mean.shape == se.shape == (2, 2, 2)


def test_nnx_module_trains_through_the_loop():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 64, 5))
  y = (x.sum(-1) > 0).astype(np.int32)
  pools = Pools({"x": jnp.asarray(x), "y": jnp.asarray(y)}, jnp.array([64, 64]))
  model = tasks.MLP(5, 8, 2, rngs=nnx.Rngs(0))
  loss_fn, params, rebuild = L.nnx_loss(model, tasks.cross_entropy)
  cfg = L.MixingConfig(batch_size=16, loss_rule="erma", sampling_rule="va", probe_size=4)
  state, trace = L.fit(loss_fn, params, optax.adam(0.03), cfg, pools, pools, [0.5, 0.5],
                       steps=100)
  before = float(jnp.mean(jax.vmap(jax.vmap(loss_fn, (None, 0)), (None, 0))(params, pools.data)))
  after = float(jnp.mean(jax.vmap(jax.vmap(loss_fn, (None, 0)), (None, 0))(state.params,
                                                                        pools.data)))
  assert after < 0.5 * before
  assert isinstance(rebuild(state.params), tasks.MLP)
  assert trace["w"].shape == (10, 2) and np.all(np.asarray(trace["b"]).sum(1) == 16)


def test_invalid_inputs_raise():
  problem = linreg.make_problem(2, (1.0, 2.0), n_train=20, n_val=5)
  _, train, val = linreg.sample(0, problem)
  base = L.MixingConfig(batch_size=4)
  fit = lambda cfg=base, pi=(0.5, 0.5), **kw: L.fit(
      linreg.squared_loss, jnp.zeros(2), optax.sgd(0.1), cfg, train, val, pi, steps=10, **kw)
  with pytest.raises(ValueError, match="pi must have all entries >= 0"):
    fit(pi=(1.5, -0.5))
  with pytest.raises(ValueError, match="pi must be finite"):
    fit(pi=(np.nan, 0.5))
  with pytest.raises(ValueError, match="pi must not be all zero"):
    fit(pi=(0.0, 0.0))
  with pytest.raises(ValueError, match="pi must have one entry per domain"):
    fit(pi=(0.2, 0.3, 0.5))
  with pytest.raises(ValueError, match="w0 must have all entries > 0"):
    fit(w0=(1.0, 0.0))
  with pytest.raises(ValueError, match="batch_size=1 is smaller than the number of domains"):
    fit(cfg=L.MixingConfig(batch_size=1))
  with pytest.raises(ValueError, match="steps=15 must be a multiple of update_every=10"):
    L.fit(linreg.squared_loss, jnp.zeros(2), optax.sgd(0.1), L.MixingConfig(batch_size=4),
          train, val, (0.5, 0.5), steps=15)
  with pytest.raises(ValueError, match="loss_rule"):
    L.MixingConfig(loss_rule="gls")
  with pytest.raises(ValueError, match="max_batch=4 must be 0 or >= batch_size=8"):
    L.MixingConfig(batch_size=8, max_batch=4)
  with pytest.raises(ValueError, match="batch_counts"):
    L.MixingConfig(sampling_rule="fixed")
  empty = train._replace(n=jnp.array([20, 0]))
  with pytest.raises(ValueError, match=r"train.n: domains \[1\] are empty"):
    L.fit(linreg.squared_loss, jnp.zeros(2), optax.sgd(0.1), L.MixingConfig(batch_size=4),
          empty, val, (0.5, 0.5), steps=10)
