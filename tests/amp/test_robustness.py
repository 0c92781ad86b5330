"""Bad input to tnx.amp: a hand-built Problem outside its domain, NaN features, bad sizes and
unknown names raise ValueError naming the argument at every public entry point."""

import math

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tnx.amp import aggregators as A
from tnx.amp import amp, data, probe, se

FIELDS = {"gamma": (0.0, math.inf, True), "alpha": (0.0, math.inf, True),
          "prior": (0.0, 1.0, True), "p_plus": (0.0, 0.5, False), "p_minus": (0.0, 0.5, False)}


def _valid(field: str, v: float) -> bool:
  low, high, low_open = FIELDS[field]
  return math.isfinite(v) and (v > low if low_open else v >= low) and v < high


def _raw(field: str, v: float) -> data.Problem:
  good = data.make_problem(1.0, 2.0, 0.2)
  return good._replace(**{field: jnp.asarray(v, jnp.float64)})


ENTRY_POINTS = {
    "trajectory": lambda pr: se.trajectory(pr, A.get("bayes"), 2),
    "grid": lambda pr: se.grid(jax.tree.map(lambda a: a[None], pr), A.get("bayes"), 2),
    "simulate": lambda pr: amp.simulate(jax.random.key(0), pr, A.get("hard"), n=40, d=20,
                                        rounds=1),
}


@hypothesis.given(field=st.sampled_from(sorted(FIELDS)),
                  v=st.one_of(st.floats(-2.0, 2.0), st.sampled_from([math.nan, math.inf])),
                  entry=st.sampled_from(sorted(ENTRY_POINTS)))
@hypothesis.settings(max_examples=40, deadline=None)
def test_raw_problems_outside_the_domain_are_refused(field, v, entry):
  if _valid(field, v):
    hypothesis.assume(False)
  with pytest.raises(ValueError, match=f"problem.{field}"):
    ENTRY_POINTS[entry](_raw(field, v))


def test_problem_type_and_shapes_are_checked():
  with pytest.raises(ValueError, match="tnx.amp.Problem"):
    data.check_problem((1.0, 2.0, 0.5, 0.1, 0.1))
  good = data.make_problem(1.0, 2.0, 0.2)
  with pytest.raises(ValueError, match="one shape"):
    data.check_problem(good._replace(alpha=jnp.ones(3)))


def test_valid_raw_problem_matches_make_problem():
  raw = data.Problem(*(jnp.asarray(v, jnp.float64) for v in (1.0, 2.0, 0.5, 0.2, 0.2)))
  a = se.trajectory(raw, A.get("bayes"), 3)
  b = se.trajectory(data.make_problem(1.0, 2.0, 0.2), A.get("bayes"), 3)
  np.testing.assert_array_equal(a.error, b.error)


def test_probe_rejects_nan_features_and_mismatched_labels():
  x = np.random.default_rng(0).normal(size=(20, 3))
  y = np.where(np.arange(20) % 2, 1.0, -1.0)
  bad = x.copy()
  bad[3, 1] = np.nan
  with pytest.raises(ValueError, match="^x must be finite"):
    probe.evaluate(jax.random.key(0), bad, y, n_train=10, p=0.1, name="hard", seeds=1)
  with pytest.raises(ValueError, match="^y must have shape"):
    probe.evaluate(jax.random.key(0), x, y[:5], n_train=10, p=0.1, name="hard", seeds=1)


@pytest.mark.parametrize("kwargs,match", [({"n": 0}, "n"), ({"d": -1}, "d"),
                                          ({"rounds": 0}, "rounds"), ({"model": "mlp"}, "model"),
                                          ({"onsager": "x"}, "onsager")])
def test_simulate_rejects_bad_arguments(kwargs, match):
  args = dict(n=40, d=20, rounds=1) | kwargs
  with pytest.raises(ValueError, match=match):
    amp.simulate(jax.random.key(0), data.make_problem(1.0, 2.0, 0.2), A.get("hard"), **args)


def test_labels_outside_plus_minus_one_are_refused():
  with pytest.raises(ValueError, match="y"):
    data.noisy_labels(jax.random.key(0), jnp.array([1.0, 0.0, -1.0]), 0.1)
