"""MNL solvers against brute force, scipy assignment and HiGHS (LP and MILP)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tnx import auctions as au

B = 256  # one batch size everywhere, so compiled kernels are reused across tests


def _brute_force(r, w, k):
  """Best MNL objective over all partial injections, by explicit Python loops."""
  n, m = w.shape
  best = 0.0
  for c in range(1, k + 1):
    for ads in itertools.permutations(range(n), c):
      for pos in itertools.combinations(range(m), c):
        num = sum(r[i] * w[i, j] for i, j in zip(ads, pos))
        den = 1.0 + sum(w[i, j] for i, j in zip(ads, pos))
        best = max(best, num / den)
  return best


def _problem(seed, batch, n, m, s=1.0, shift=0.3):
  inst = au.generate_instances(jax.random.PRNGKey(seed), batch, n, m, s)
  return inst.v - shift, au.w_from_p(inst.p), inst.p


def test_table_size_and_feasibility():
  for n, m, k in [(6, 4, 3), (3, 5, 2), (4, 4, 4)]:
    t = au.enumerate_allocations(n, m, k)
    assert t.shape[0] == au.num_allocations(n, m, k)
    assert t.max(axis=2).max() <= 1 and t.sum(2).max() <= 1 and t.sum(1).max() <= 1
    assert t.sum((1, 2)).max() == k
    assert len({a.tobytes() for a in t}) == t.shape[0]  # no duplicates
  assert au.num_allocations(6, 4, 3) == 685


@pytest.mark.parametrize("n,m,k,s", [(4, 3, 2, 0.0), (4, 3, 2, 2.0)])
def test_enumeration_matches_python_brute_force(n, m, k, s):
  r, w, _ = _problem(1, 30, n, m, s)
  vals = np.asarray(au.mnl_value(au.mnl_opt_enum(r, w, k), r, w))
  ref = [_brute_force(np.asarray(r[b]), np.asarray(w[b]), k) for b in range(30)]
  np.testing.assert_allclose(vals, ref, atol=1e-12)


@pytest.mark.parametrize("n,m,k,s", [(6, 4, 3, 0.0), (6, 4, 3, 2.0), (5, 5, 1, 1.0)])
def test_jax_solvers_equal_enumeration(n, m, k, s):
  r, w, _ = _problem(2, B, n, m, s)
  ref = au.mnl_value(au.mnl_opt_enum(r, w, k), r, w)
  solvers = (au.mnl_opt_dinkelbach, au.mnl_opt_bisection) if k == 3 else (au.mnl_opt_dinkelbach,)
  for solver in solvers:
    x = solver(r, w, k)
    assert float(jnp.max(x.sum(-1))) <= 1 and float(jnp.max(x.sum(-2))) <= 1
    assert float(jnp.max(x.sum((-1, -2)))) <= k
    np.testing.assert_allclose(au.mnl_value(x, r, w), ref, atol=1e-10)


def test_host_lp_and_scipy_assignment_equal_enumeration():
  r, w, _ = _problem(3, B, 6, 4, 1.5)
  ref = np.asarray(au.mnl_value(au.mnl_opt_enum(r, w, 3), r, w))
  x_jax = au.mnl_opt_dinkelbach(r, w, 3)
  for b in range(40):
    x_lp, v_lp = au.mnl_opt_lp(r[b], w[b], 3)
    assert v_lp == pytest.approx(ref[b], abs=1e-9)
    assert float(au.mnl_value(x_lp, r[b], w[b])) == pytest.approx(ref[b], abs=1e-9)
    x_sc = au.mnl_opt_scipy(r[b], w[b], 3)
    assert float(au.mnl_value(x_sc, r[b], w[b])) == pytest.approx(ref[b], abs=1e-12)
    assert float(au.mnl_value(x_jax[b], r[b], w[b])) == pytest.approx(ref[b], abs=1e-12)


def test_medium_size_dinkelbach_matches_lp():
  r, w, _ = _problem(4, 12, 20, 8, 1.0)
  vals = au.mnl_value(au.mnl_opt_dinkelbach(r, w, 4), r, w)
  for b in range(12):
    assert float(vals[b]) == pytest.approx(au.mnl_opt_lp(r[b], w[b], 4)[1], abs=1e-9)


def test_kcard_matching_against_scipy_and_milp():
  rng = np.random.default_rng(0)
  weights = rng.normal(size=(30, 7, 5))
  xs = jax.vmap(lambda a: au.kcard_matching(a, 3))(jnp.asarray(weights))
  for b in range(30):
    got = float((xs[b] * weights[b]).sum())
    assert got == pytest.approx((au.kcard_matching_scipy(weights[b], 3) * weights[b]).sum())
    assert got == pytest.approx((au.kcard_matching_milp(weights[b], 3) * weights[b]).sum())


def test_structure_endogenous_reserve():
  r, w, _ = _problem(5, B, 6, 4, 1.0)
  x = au.mnl_opt_dinkelbach(r, w, 3)
  lam = au.mnl_value(x, r, w)
  shown = x.sum(-1) > 0
  assert bool(jnp.all(jnp.where(shown, r > lam[:, None], True)))  # shown ads beat lambda*
  assert bool(jnp.all(jnp.where(r <= 0, ~shown, True)))           # r <= 0 never shown
  assert bool(jnp.all(jnp.where(jnp.max(r, -1) > 0, lam < jnp.max(r, -1), lam == 0)))


def test_heuristics_never_beat_exact_and_separable_limit():
  r, w, p = _problem(6, B, 6, 4, 1.0)
  ref = au.mnl_value(au.mnl_opt_enum(r, w, 3), r, w)
  for name in ("separable", "additive"):
    val = au.mnl_value(au.mnl_heuristic(r, p, 3, name), r, w)
    assert bool(jnp.all(val <= ref + 1e-12))
  # Tiny separable weights: substitution vanishes and the optimum is the assortative ranking.
  inst = au.generate_instances(jax.random.PRNGKey(7), B, 6, 4, 0.0)
  alpha, beta = inst.p[:, :, :1], inst.p[:, :1, :] / inst.p[:, :1, :1]
  p_sep = 1e-4 * alpha * beta / jnp.max(alpha * beta)
  x = au.mnl_opt_enum(inst.v, au.w_from_p(p_sep), 3)
  x_rank = au.mnl_heuristic(inst.v, p_sep, 3, "separable")
  add = lambda a: jnp.sum(inst.v[:, :, None] * p_sep * a, axis=(1, 2))
  np.testing.assert_allclose(add(x), add(x_rank), rtol=1e-3)


@pytest.mark.parametrize("bad", ["p_high", "p_neg", "r_nan", "k_big", "k_zero", "shape"])
def test_invalid_arguments_raise(bad):
  r, w, p = _problem(8, B, 6, 4)
  k = 3
  with pytest.raises(ValueError) as err:
    if bad == "p_high":
      au.w_from_p(p.at[0, 0, 0].set(1.2))
    elif bad == "p_neg":
      au.mnl_heuristic(r, p.at[0, 0, 0].set(-0.1), k, "additive")
    elif bad == "r_nan":
      au.mnl_opt_dinkelbach(r.at[0, 0].set(jnp.nan), w, k)
    elif bad == "k_big":
      au.mnl_opt_enum(r, w, 5)
    elif bad == "k_zero":
      au.mnl_opt_dinkelbach(r, w, 0)
    else:
      au.mnl_opt_bisection(r[:, :3], w, k)
  name = {"p_high": "p", "p_neg": "p", "r_nan": "r", "k_big": "K", "k_zero": "K",
          "shape": "r"}[bad]
  assert str(err.value).startswith(name)
