"""Cascade model: ordering rule, exact solvers, approximation ratio and VCG incentives."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tnx import auctions as au

N, M, K = 5, 4, 3
B = 128  # one batch size for most tests, so compiled kernels are reused


def _inst(seed, batch, variant="C1", n=N, m=M):
  inst = au.generate_instances(jax.random.PRNGKey(seed), batch, n, m, 1.0)
  if variant == "C1":
    q = au.continuation(inst.p)
  elif variant == "C2":
    q = au.continuation(inst.p, jax.random.uniform(jax.random.PRNGKey(seed + 99), inst.p.shape))
  else:  # C3
    q = au.continuation(inst.p, delta=0.8)
  return inst.v, inst.p, q


def _sequence_value(seq, r, p, q):
  val, reach = 0.0, 1.0
  for i, j in seq:
    val += reach * r[i] * p[i, j]
    reach *= q[i, j]
  return val


def _brute_force(r, p, q, k, rank=None):
  """Best welfare over all ordered sequences of pairs (free order) or fixed-order sets."""
  n, m = p.shape
  best = 0.0
  for c in range(1, k + 1):
    for ads in itertools.permutations(range(n), c):
      for pos in itertools.permutations(range(m), c):
        seq = list(zip(ads, pos))
        if rank is not None and any(rank[a[1]] > rank[b[1]] for a, b in zip(seq, seq[1:])):
          continue
        best = max(best, _sequence_value(seq, r, p, q))
  return best


@pytest.mark.parametrize("variant", ["C1", "C2", "C3"])
def test_ordering_rule_equals_best_permutation(variant):
  r, p, q = _inst(0, B, variant)
  x = au.cascade_solve(r, p, q, K, "greedy")  # any allocation with several pairs
  vals = au.cascade_value(x, r, p, q)
  for b in range(B):
    pairs = [tuple(e) for e in np.argwhere(np.asarray(x[b]) > 0)]
    best = max((_sequence_value(s, *(np.asarray(a[b]) for a in (r, p, q)))
                for s in itertools.permutations(pairs)), default=0.0)
    assert float(vals[b]) == pytest.approx(best, abs=1e-12)


@pytest.mark.parametrize("variant", ["C1", "C2"])
def test_enumeration_matches_ordered_brute_force(variant):
  r, p, q = _inst(1, 12, variant, n=4, m=3)
  vals = au.cascade_value(au.cascade_solve(r, p, q, 2, "enum"), r, p, q)
  for b in range(12):
    ref = _brute_force(*(np.asarray(a[b]) for a in (r, p, q)), 2)
    assert float(vals[b]) == pytest.approx(ref, abs=1e-12)


def test_fixed_order_enumeration_matches_brute_force():
  r, p, q = _inst(2, 12, "C2", n=4, m=3)
  rank = jnp.tile(jnp.array([1, 2, 0]), (12, 1))
  vals = au.cascade_value(au.cascade_solve(r, p, q, 2, "enum", rank=rank), r, p, q, rank=rank)
  for b in range(12):
    ref = _brute_force(*(np.asarray(a[b]) for a in (r, p, q)), 2, rank=[1, 2, 0])
    assert float(vals[b]) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("variant", ["C1", "C2", "C3"])
def test_dynamic_programs_equal_enumeration(variant):
  r, p, q = _inst(3, B, variant)
  rank = jax.vmap(lambda k: jax.random.permutation(k, M))(jax.random.split(jax.random.PRNGKey(4),
                                                                            B))
  ref = au.cascade_value(au.cascade_solve(r, p, q, K, "enum", rank=rank), r, p, q, rank=rank)
  got = au.cascade_value(au.cascade_solve(r, p, q, K, "dp", rank=rank), r, p, q, rank=rank)
  np.testing.assert_allclose(got, ref, atol=1e-12)
  if variant == "C1":
    ref = au.cascade_value(au.cascade_solve(r, p, q, K, "enum"), r, p, q)
    got = au.cascade_value(au.cascade_solve(r, p, q, K, "dp"), r, p, q)
    np.testing.assert_allclose(got, ref, atol=1e-12)


def test_greedy_meets_one_third_under_click_and_leave():
  r, p, q = _inst(5, B, "C1")
  opt = au.cascade_value(au.cascade_solve(r, p, q, K, "dp"), r, p, q)
  greedy = au.cascade_value(au.cascade_solve(r, p, q, K, "greedy"), r, p, q)
  local = au.cascade_value(au.cascade_solve(r, p, q, K, "local_search"), r, p, q)
  assert float(jnp.min(greedy / opt)) >= 1.0 / 3.0
  assert bool(jnp.all(local >= greedy - 1e-12)) and bool(jnp.all(local <= opt + 1e-12))
  for name in ("additive", "mnl"):
    val = au.cascade_value(au.cascade_solve(r, p, q, K, name), r, p, q)
    assert bool(jnp.all(val <= opt + 1e-12))


@pytest.mark.parametrize("fixed", [False, True])
def test_cascade_vcg_truthful_and_rational(fixed):
  v, p, q = _inst(6, B, "C1" if not fixed else "C2")
  rank = jnp.tile(jnp.array([3, 1, 0, 2]), (B, 1)) if fixed else None
  _, ctr, pay = au.cascade_vcg(v, p, q, K, rank=rank)
  util = v * ctr - pay
  assert float(pay.min()) >= -1e-12 and float(util.min()) >= -1e-12
  for t in range(10):
    i = t % N
    mis = jax.random.uniform(jax.random.PRNGKey(100 + t), (B,)) * 1.5
    _, c_mis, p_mis = au.cascade_vcg(v.at[:, i].set(mis), p, q, K, rank=rank)
    assert float((v[:, i] * c_mis[:, i] - p_mis[:, i] - util[:, i]).max()) <= 1e-9


def test_invalid_arguments_raise():
  r, p, q = _inst(7, B, "C2")
  with pytest.raises(ValueError, match="^q must equal"):
    au.cascade_solve(r, p, q, K, "dp")
  with pytest.raises(ValueError, match="^q"):
    au.cascade_solve(r, p, q[:, :, :2], K, "greedy")
  with pytest.raises(ValueError, match="^p"):
    au.continuation(p.at[0, 0, 0].set(1.5))
  with pytest.raises(ValueError, match="^delta"):
    au.continuation(p, delta=1.5)
  with pytest.raises(ValueError, match="^rank"):
    au.cascade_solve(r, p, q, K, "enum", rank=jnp.zeros((B, M), int))
  with pytest.raises(ValueError, match="^K"):
    au.cascade_solve(r, p, q, M + 1, "enum")
  with pytest.raises(ValueError, match="^method"):
    au.cascade_solve(r, p, q, K, "magic")
  with pytest.raises(ValueError, match="^bids"):
    au.cascade_vcg(-r, p, au.continuation(p), K)
