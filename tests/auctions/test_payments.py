"""Payments: VCG = envelope with identity scores, IC, IR, monotonicity, revenue identities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tnx import auctions as au

N, M, K = 5, 4, 3
B = 128  # one batch size everywhere, so compiled kernels are reused across tests


def _inst(seed, batch, prior="uniform", s=1.0):
  inst = au.generate_instances(jax.random.PRNGKey(seed), batch, N, M, s, prior)
  return inst.v, au.w_from_p(inst.p)


MAPS = {
    "vcg": au.identity_map,
    "myerson_uniform": lambda: au.ironed_virtual_value_map("uniform"),
    "myerson_bimodal": lambda: au.ironed_virtual_value_map("bimodal"),
    "reserve": lambda: au.reserve_map(0.5),
}


def test_clarke_vcg_equals_threshold_payments():
  v, w = _inst(0, B)
  _, ctr_a, pay_a = au.mnl_mechanism(v, w, K)
  _, ctr_b, pay_b = au.mnl_vcg(v, w, K, solver="dinkelbach")
  _, ctr_c, pay_c = au.mnl_vcg(v, w, K, solver="enum")
  np.testing.assert_allclose(ctr_a, ctr_b, atol=1e-12)
  np.testing.assert_allclose(pay_a, pay_b, atol=1e-10)
  np.testing.assert_allclose(pay_b, pay_c, atol=1e-12)


def test_myerson_payment_brackets_numerical_integral():
  """P_i(b) = b ctr_i(b) - int_0^b ctr_i(z) dz; left/right Riemann sums of the monotone CTR
  curve on a B-point bid grid bracket the integral."""
  v, w = _inst(1, B, "bimodal")
  smap = MAPS["myerson_bimodal"]()
  _, ctr, pay = au.mnl_mechanism(v, w, K, smap)
  for b in range(6):
    i = int(jnp.argmax(ctr[b]))
    grid = jnp.linspace(0.0, 1.0, B) * v[b, i]
    bids = jnp.tile(v[b], (B, 1)).at[:, i].set(grid)
    _, c_grid, _ = au.mnl_mechanism(bids, jnp.broadcast_to(w[b], (B, N, M)), K, smap)
    curve, step = np.asarray(c_grid[:, i]), float(grid[1] - grid[0])
    assert np.all(np.diff(curve) >= -1e-12)  # monotone in own bid
    lower, upper = step * curve[:-1].sum(), step * curve[1:].sum()
    surplus = float(v[b, i] * ctr[b, i])
    assert surplus - upper - 1e-9 <= float(pay[b, i]) <= surplus - lower + 1e-9
    assert upper - lower < 0.02


@pytest.mark.parametrize("name", list(MAPS))
def test_truthful_and_individually_rational(name):
  smap = MAPS[name]()
  v, w = _inst(2, B, "bimodal" if "bimodal" in name else "uniform")
  _, ctr, pay = au.mnl_mechanism(v, w, K, smap)
  util = v * ctr - pay
  assert float(pay.min()) >= -1e-12 and float(util.min()) >= -1e-12  # IR, no positive transfers
  assert bool(jnp.all(jnp.where(ctr == 0, pay == 0, True)))          # losers pay 0
  key = jax.random.PRNGKey(3)
  for t in range(20):
    i = t % N
    mis = jax.random.uniform(jax.random.fold_in(key, t), (v.shape[0],)) * 1.5
    _, c_mis, p_mis = au.mnl_mechanism(v.at[:, i].set(mis), w, K, smap)
    gain = v[:, i] * c_mis[:, i] - p_mis[:, i] - util[:, i]
    assert float(gain.max()) <= 1e-9


def test_monotone_allocation_on_bid_grid():
  v, w = _inst(4, B)
  inst, grid = 8, jnp.linspace(0.0, 1.5, B // 8)
  bids = jnp.repeat(v[:inst], B // inst, axis=0).at[:, 0].set(jnp.tile(grid, inst))
  ww = jnp.repeat(w[:inst], B // inst, axis=0)
  for name in MAPS:
    _, ctr, _ = au.mnl_mechanism(bids, ww, K, MAPS[name]())
    assert float(jnp.min(jnp.diff(ctr[:, 0].reshape(inst, -1), axis=1))) >= -1e-12, name


def _stacked(fn, draws):
  outs = [fn(d) for d in range(draws)]
  return tuple(jnp.concatenate(o) for o in zip(*outs))


def test_revenue_ordering_and_ironed_virtual_surplus():
  """Myerson revenue >= VCG (+reserve) revenue in expectation, and equals E[sum phibar ctr].

  3-standard-error bands on 32 * B = 4096 paired draws: false-failure rate below 0.3% per
  comparison.
  """
  smap = MAPS["myerson_bimodal"]()
  reserve = au.reserve_map(float(au.monopoly_reserve(smap)))

  def run(d):
    v, w = _inst(1000 + d, B, "bimodal")
    out = [v]
    for sm in (smap, au.identity_map(), reserve):
      _, ctr, pay = au.mnl_mechanism(v, w, K, sm)
      out += [ctr, pay.sum(-1)]
    return out

  v, ctr_my, rev_my, ctr_vcg, rev_vcg, _, rev_res = _stacked(run, 32)
  count = v.shape[0]
  diff = rev_my - (au.apply_map(smap, v) * ctr_my).sum(-1)
  assert abs(float(diff.mean())) <= 3 * float(diff.std()) / np.sqrt(count) + 1e-4
  for rev in (rev_vcg, rev_res):
    d = rev_my - rev
    assert float(d.mean()) >= -3 * float(d.std()) / np.sqrt(count)
  assert bool(jnp.all((v * ctr_vcg).sum(-1) >= (v * ctr_my).sum(-1) - 1e-12))


def test_invalid_bids_and_maps_raise():
  v, w = _inst(6, B)
  with pytest.raises(ValueError, match="^bids"):
    au.mnl_mechanism(v.at[0, 0].set(-0.1), w, K)
  with pytest.raises(ValueError, match="^w"):
    au.mnl_mechanism(v, -w, K)
  with pytest.raises(ValueError, match="^K"):
    au.mnl_vcg(v, w, M + 1)
  with pytest.raises(ValueError, match="^score_map"):
    au.mnl_mechanism(v, w, K, au.ScoreMap(jnp.zeros((N + 1, 3)), jnp.zeros((N + 1, 3))))
  with pytest.raises(ValueError, match="^reserve"):
    au.reserve_map(-1.0)
