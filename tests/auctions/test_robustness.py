"""Bad input to tnx.auctions: invalid priors, score maps, allocations, empty or mismatched
arrays and NaN raise ValueError naming the argument; never a plausible-looking answer."""

import math

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tnx import auctions as au

N, M, K = 3, 2, 2


def _inst(seed=0, n=N, m=M):
  inst = au.generate_instances(jax.random.PRNGKey(seed), 4, n, m, 1.0)
  return inst.v, inst.p, au.w_from_p(inst.p)


@pytest.mark.parametrize("make,name", [
    (lambda: au.ExponentialPrior(-1.0), "rate"),
    (lambda: au.ExponentialPrior(math.nan), "rate"),
    (lambda: au.UniformPrior(1.0, 0.5), "low < high"),
    (lambda: au.UniformPrior(-1.0, 1.0), "low"),
    (lambda: au.BimodalPrior(0.7, 0.8, 0.2), "a < b"),
    (lambda: au.BimodalPrior(1.2, 0.3, 0.7), "weight_low"),
    (lambda: au.BimodalPrior(0.5, 0.0, 0.7), "BimodalPrior.a"),
])
def test_invalid_priors_raise(make, name):
  with pytest.raises(ValueError, match=name):
    make()


def test_decreasing_score_map_is_refused():
  v, _, w = _inst()
  bad = au.ScoreMap(v=jnp.array([0.0, 1.0]), s=jnp.array([1.0, 0.0]))
  with pytest.raises(ValueError, match="non-decreasing"):
    au.mnl_mechanism(v, w, K, bad)
  with pytest.raises(ValueError, match="non-decreasing"):
    au.apply_map(bad, v)
  unsorted = au.ScoreMap(v=jnp.array([0.0, 2.0, 1.0]), s=jnp.array([0.0, 1.0, 2.0]))
  with pytest.raises(ValueError, match="strictly increasing"):
    au.inverse_map(unsorted, jnp.zeros(3))
  with pytest.raises(ValueError, match="finite"):
    au.apply_map(au.ScoreMap(v=jnp.array([0.0, jnp.nan]), s=jnp.array([0.0, 1.0])), v)


def test_apply_map_rejects_nan_bids():
  with pytest.raises(ValueError, match="^b must be finite"):
    au.apply_map(au.identity_map(), jnp.array([0.5, jnp.nan]))


def test_tiny_reserve_map_is_valid_and_monotone():
  smap = au.reserve_map(1e-12)
  au.apply_map(smap, jnp.array([0.0, 0.5]))       # passes check_score_map
  assert float(au.apply_map(smap, jnp.array([0.0]))[0]) < 0 < float(
      au.apply_map(smap, jnp.array([0.5]))[0])


@pytest.mark.parametrize("num", [1, 3, 101, 1000])
def test_coarse_ironing_grid_is_refused(num):
  with pytest.raises(ValueError, match="num"):
    au.ironed_virtual_value_map("bimodal", num=num)


def test_ironed_map_at_the_minimum_grid_is_accurate():
  fine = au.ironed_virtual_value_map("bimodal", num=200_001)
  coarse = au.ironed_virtual_value_map("bimodal", num=au.virtual_values.MIN_GRID)
  b = jnp.linspace(0.01, 0.99, 197)
  assert float(jnp.max(jnp.abs(au.apply_map(coarse, b) - au.apply_map(fine, b)))) < 1e-6


@pytest.mark.parametrize("x,match", [
    (np.array([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]), "infeasible"),   # one ad, two positions
    (np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]), "infeasible"),   # one position, two ads
    (np.array([[0.5, 0.0], [0.0, 0.0], [0.0, 0.0]]), "0/1"),
    (np.array([[np.nan, 0.0], [0.0, 0.0], [0.0, 0.0]]), "0/1"),
    (np.zeros((2, 2)), "shape"),
])
def test_value_functions_reject_bad_allocations(x, match):
  v, p, w = _inst()
  with pytest.raises(ValueError, match=match):
    au.mnl_value(x, v[0], w[0])
  with pytest.raises(ValueError, match=match):
    au.cascade_value(x, v[0], p[0], 1 - p[0])


def test_value_functions_reject_nan_scores_and_mismatched_shapes():
  v, p, w = _inst()
  x = np.zeros((N, M))
  with pytest.raises(ValueError, match="^r must be finite"):
    au.mnl_value(x, v[0].at[0].set(jnp.nan), w[0])
  with pytest.raises(ValueError, match="^r "):
    au.mnl_value(x, v[0, :2], w[0])
  with pytest.raises(ValueError, match="^x "):
    au.mnl_ctr(np.zeros((N, M + 1)), w[0])
  with pytest.raises(ValueError, match="^w must be finite and >= 0"):
    au.mnl_ctr(x, -w[0])


SOLVERS = {
    "mnl_opt_enum": lambda r, w, p: au.mnl_opt_enum(r, w, 1),
    "mnl_opt_dinkelbach": lambda r, w, p: au.mnl_opt_dinkelbach(r, w, 1),
    "mnl_opt_bisection": lambda r, w, p: au.mnl_opt_bisection(r, w, 1),
    "mnl_opt_lp": lambda r, w, p: au.mnl_opt_lp(r, w, 1),
    "mnl_vcg": lambda r, w, p: au.mnl_vcg(r, w, 1),
    "mnl_mechanism": lambda r, w, p: au.mnl_mechanism(r, w, 1),
    "cascade_dp": lambda r, w, p: au.cascade_solve(r, p, 1 - p, 1, "dp"),
    "cascade_greedy": lambda r, w, p: au.cascade_solve(r, p, 1 - p, 1, "greedy"),
    "cascade_enum": lambda r, w, p: au.cascade_solve(r, p, 1 - p, 1, "enum"),
}


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_empty_instances_raise_one_clear_error(name):
  r, w, p = np.zeros((0,)), np.zeros((0, 2)), np.zeros((0, 2))
  with pytest.raises(ValueError, match="at least one advertiser"):
    SOLVERS[name](r, w, p)


@hypothesis.given(
    bad=st.sampled_from([math.nan, math.inf, -math.inf]),
    where=st.sampled_from(["r", "table"]),
    name=st.sampled_from(sorted(SOLVERS)))
@hypothesis.settings(max_examples=40, deadline=None)
def test_non_finite_inputs_never_reach_a_solver(bad, where, name):
  v, p, w = (np.array(a[0]) for a in _inst())
  if where == "r":
    v[1] = bad
  else:             # w and p are one table in two parametrizations: spoil both
    w.flat[1], p.flat[1] = bad, bad
  with pytest.raises(ValueError):
    SOLVERS[name](v, w, p)


@hypothesis.given(p=st.floats(-2.0, 3.0), k=st.integers(-2, 5))
@hypothesis.settings(max_examples=40, deadline=None)
def test_probabilities_and_k_outside_their_range_raise(p, k):
  v, ps, _ = (np.array(a[0]) for a in _inst())
  table = ps.copy()
  table[0, 0] = p
  valid_p, valid_k = 0.0 <= p <= 1.0, 1 <= k <= M
  if valid_p and valid_k:
    au.cascade_solve(v, table, 1 - table, k, "enum")
  else:
    with pytest.raises(ValueError):
      au.cascade_solve(v, table, 1 - table, k, "enum")
