"""Stratified sampling: variance formula against Monte Carlo through the real slot/draw code,
VA optimality against enumeration, rounding, and the full-batch limit."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tnx.mixing import linreg
from tnx.mixing import sampling as S
from tnx.mixing.pools import Pools


def _problem_grads(seed, n=(300, 500), d=6, sigma2=(1.0, 0.04)):
  problem = linreg.make_problem(d, (1.0, 1.0), n_train=n, n_val=5)
  problem = linreg.LinearProblem(problem.cov * np.array([1.0, 4.0])[:, None, None],
                                 np.asarray(sigma2), problem.pi, problem.n_train,
                                 problem.n_val)
  theta_star, train, _ = linreg.sample(seed, problem)
  theta = theta_star + 0.3 * jnp.asarray(np.random.default_rng(9).standard_normal(d))
  return train, linreg.per_example_grads(theta, train), theta


def _stratified_estimates(keys, grads_KxNxD, n_K, pi, w, b, max_batch, replace):
  """g for each key via the loop's own slot layout, draws and coefficients."""
  slots = S.slot_layout(b, max_batch)
  coef = S.slot_coefficients(slots, pi, w, b)

  def one(key):
    idx = S.draw_indices(key, slots, n_K, grads_KxNxD.shape[1], replace=replace)
    return jnp.sum(coef[:, None] * grads_KxNxD[slots.domain, idx], axis=0)

  return jax.jit(jax.vmap(one))(keys)


@pytest.mark.parametrize("replace", [True, False])
def test_minibatch_variance_matches_monte_carlo(replace):
  """Item 4: E||g - grad Lhat_w||^2 = sum pi^2 w^2 v^2 / b (x (n-b)/(n-1) without replacement),
  with w = (1, 3), b = (10, 22), over 2e4 draws, within 3 standard errors (and 3%)."""
  train, g, theta = _problem_grads(0)
  pi, w, b = jnp.array([0.5, 0.5]), jnp.array([1.0, 3.0]), jnp.array([10, 22])
  n = train.n.astype(jnp.float64)
  full = jnp.sum((pi * w / n)[:, None] * jnp.sum(g, axis=1), axis=0)
  keys = jax.random.split(jax.random.key(1), 20000)
  est = _stratified_estimates(keys, g, train.n, pi, w, b, 40, replace)
  sq = np.asarray(jnp.sum((est - full) ** 2, axis=1))
  np.testing.assert_allclose(np.asarray(est).mean(0), full, atol=4 * np.sqrt(sq.mean() / 2e4))
  _, v2 = linreg.empirical_grad_moments(theta, train)
  pred = float(S.minibatch_variance(pi, w, v2, b, None if replace else n))
  se = sq.std(ddof=1) / np.sqrt(sq.size)
  assert abs(sq.mean() - pred) < 3 * se and abs(sq.mean() / pred - 1) < 0.03, (sq.mean(), pred)


def test_full_batch_without_replacement_has_zero_variance():
  """Item 10: with b = n and sampling without replacement every step is the full gradient."""
  train, g, _ = _problem_grads(2, n=(7, 12), d=3)
  pi, w = jnp.array([0.3, 0.7]), jnp.array([2.0, 0.5])
  n = train.n.astype(jnp.float64)
  full = jnp.sum((pi * w / n)[:, None] * jnp.sum(g, axis=1), axis=0)
  est = _stratified_estimates(jax.random.split(jax.random.key(3), 50), g, train.n, pi, w,
                              train.n, 19, False)
  np.testing.assert_allclose(est, jnp.broadcast_to(full, est.shape), rtol=1e-12, atol=1e-14)
  assert float(S.minibatch_variance(pi, w, jnp.array([3.0, 5.0]), train.n, n)) == 0.0


def test_va_allocation_against_enumeration():
  """Item 5: the greedy rounding is the enumerated integer optimum; largest-remainder rounding
  of b* is within one example of it; V(pi w) / V* matches the closed forms."""
  pi, w, v = jnp.array([0.5, 0.5]), jnp.array([1.0, 1.0]), jnp.array([1.0, 0.1])
  both = jax.jit(lambda pi, w, v, bsz: (S.allocate(pi, w, v, bsz, "greedy"),
                                        S.allocate(pi, w, v, bsz, "largest_remainder")),
                 static_argnums=3)
  for bsz in (8, 32, 33):
    grid = [(b1, bsz - b1) for b1 in range(1, bsz)]
    var = np.asarray(jax.vmap(lambda b: S.minibatch_variance(pi, w, v**2, b))(
        jnp.asarray(grid, jnp.float64)))
    best = np.array(grid[int(np.argmin(var))])
    greedy, lr = both(pi, w, v, bsz)
    np.testing.assert_array_equal(greedy, best)
    lr = np.asarray(lr)
    assert lr.sum() == bsz and np.max(np.abs(lr - best)) <= 1
    assert min(var) >= float(S.optimal_variance(pi, w, v, bsz)) - 1e-15
  bsz = 32
  ratio = S.proportional_variance(pi, w, v, bsz) / S.optimal_variance(pi, w, v, bsz)
  np.testing.assert_allclose(ratio, 0.505 / 0.3025, rtol=1e-12)  # (1.01/2)/(1.1/2)^2
  pw = bsz * pi * w / jnp.sum(pi * w)
  np.testing.assert_allclose(S.minibatch_variance(pi, w, v**2, pw),
                             S.proportional_variance(pi, w, v, bsz), rtol=1e-12)
  np.testing.assert_allclose(S.minibatch_variance(pi, w, v**2, S.va_allocation(pi, w, v, bsz)),
                             S.optimal_variance(pi, w, v, bsz), rtol=1e-12)


def test_greedy_matches_enumeration_three_domains():
  pi, w, v = jnp.array([0.2, 0.3, 0.5]), jnp.array([1.0, 2.0, 0.5]), jnp.array([3.0, 0.2, 1.0])
  bsz = 12
  grid = np.array([b + (bsz - sum(b),) for b in itertools.product(range(1, bsz), repeat=2)
                   if sum(b) < bsz], np.float64)
  var = (np.asarray(pi * w * v) ** 2 / grid).sum(1)  # sum pi^2 w^2 v^2 / b by enumeration
  np.testing.assert_array_equal(S.allocate(pi, w, v, bsz, "greedy"), grid[np.argmin(var)])


def test_equal_variances_give_proportional_allocation():
  """Item 10: all v_i equal -> VA is b ~ pi w."""
  pi, w = jnp.array([0.2, 0.3, 0.5]), jnp.array([1.5, 1.0, 0.7])
  np.testing.assert_array_equal(S.allocate(pi, w, jnp.full(3, 2.0), 40),
                                S.proportional_allocation(pi * w, 40))


@pytest.mark.parametrize("k", [2, 5])
def test_largest_remainder_is_a_valid_allocation(k):
  """Random targets (many zeros and tiny values among them): sum = B, every b_i >= 1, and
  when no domain needs forcing up to 1, each b_i is within one of its target."""
  rng = np.random.default_rng(k)
  x = rng.exponential(size=(400, k)) * (rng.random((400, k)) < 0.8)
  x[:5] = 0.0
  bsz = 4 * k + 4
  b = np.asarray(jax.jit(jax.vmap(lambda v: S.round_largest_remainder(v, bsz)))(x))
  assert np.all(b.sum(1) == bsz) and b.min() >= 1
  mass = x.sum(1, keepdims=True)
  target = np.where(mass > 0, bsz * x / np.where(mass > 0, mass, 1), bsz / k)
  plain = target.min(1) >= 1
  assert plain.sum() > 20
  assert np.all(np.abs(b[plain] - target[plain]) < 1)


def test_slot_layout_and_masks():
  slots = S.slot_layout(jnp.array([2, 3, 1]), 8)
  np.testing.assert_array_equal(slots.domain, [0, 0, 1, 1, 1, 2, 2, 2])
  np.testing.assert_array_equal(slots.rank[:6], [0, 1, 0, 1, 2, 0])
  np.testing.assert_array_equal(slots.active, [1, 1, 1, 1, 1, 1, 0, 0])
  c = S.slot_coefficients(slots, jnp.array([0.5, 0.25, 0.25]), jnp.ones(3), jnp.array([2, 3, 1]))
  np.testing.assert_allclose(c, [0.25, 0.25, 1 / 12, 1 / 12, 1 / 12, 0.25, 0, 0])


def test_common_random_numbers_across_allocations():
  """Domain i's k-th draw at a step does not depend on the other domains' batch sizes."""
  n = jnp.array([100, 100])
  key = jax.random.key(5)
  a = S.slot_layout(jnp.array([4, 12]), 16)
  b = S.slot_layout(jnp.array([10, 6]), 16)
  ia = S.draw_indices(key, a, n, 100)
  ib = S.draw_indices(key, b, n, 100)
  np.testing.assert_array_equal(ia[:4], ib[:4])      # domain 0, ranks 0..3
  np.testing.assert_array_equal(ia[4:10], ib[10:16])  # domain 1, ranks 0..5


def test_allocation_validation():
  with pytest.raises(ValueError, match="batch_counts must sum to batch_size=8"):
    S.counts_from_allocation([3, 3], 2, 8, 8)
  with pytest.raises(ValueError, match="batch_counts must be 2 integers >= 1"):
    S.counts_from_allocation([0, 8], 2, 8, 8)
  with pytest.raises(ValueError, match="rounding"):
    S.allocate(jnp.ones(2) / 2, jnp.ones(2), jnp.ones(2), 4, "nearest")


def test_pools_reject_empty_domain():
  from tnx.mixing.pools import from_domains
  with pytest.raises(ValueError, match="domains .*empty"):
    from_domains([{"x": np.zeros((3, 2))}, {"x": np.zeros((0, 2))}])
  with pytest.raises(ValueError, match="at least one domain"):
    from_domains([])
  p = from_domains([{"x": np.ones((3, 2))}, {"x": np.ones((5, 2))}])
  assert isinstance(p, Pools) and p.data["x"].shape == (2, 5, 2)
  np.testing.assert_array_equal(p.n, [3, 5])
