"""tnx.validation: every check accepts the valid edge, rejects the invalid one with a message
naming the argument and the value, and skips only what a tracer hides."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tnx import validation as v


def test_integers():
  assert v.positive_int("n", 1) == 1 and v.positive_int("n", np.int64(3)) == 3
  assert v.non_negative_int("n", 0) == 0
  for bad in (0, -1, 1.0, True, "2", None):
    with pytest.raises(ValueError, match=f"n must be a positive integer, got {bad!r}"):
      v.positive_int("n", bad)
  for bad in (-1, 0.0, False):
    with pytest.raises(ValueError, match="n must be a non-negative integer"):
      v.non_negative_int("n", bad)


def test_scalars_and_ranges():
  assert v.positive("s", 1e-300) == 1e-300 and v.non_negative("s", 0.0) == 0.0
  for bad in (0.0, -1.0, float("nan"), float("inf")):
    with pytest.raises(ValueError, match="s must be a finite number > 0"):
      v.positive("s", bad)
  with pytest.raises(ValueError, match="s must be a finite number >= 0"):
    v.non_negative("s", -1e-12)
  assert v.in_range("p", 0.0, 0.0, 1.0) == 0.0 and v.in_range("p", 1.0, 0.0, 1.0) == 1.0
  with pytest.raises(ValueError, match=r"p must lie in \(0.0, 1.0\], got 0.0"):
    v.in_range("p", 0.0, 0.0, 1.0, low_open=True)
  with pytest.raises(ValueError, match=r"p must lie in \[0.0, 1.0\), got 1.0"):
    v.in_range("p", 1.0, 0.0, 1.0, high_open=True)
  with pytest.raises(ValueError, match="p must lie in"):
    v.in_range("p", float("nan"), 0.0, 1.0)


def test_arrays():
  v.array_in_range("a", np.array([0.0, 1.0]), 0.0, 1.0)
  v.array_in_range("a", np.zeros(0), 0.0, 1.0)
  with pytest.raises(ValueError, match=r"a must have all entries in \[0.0, 1.0\], found e.g. "
                     r"\[1.5\]"):
    v.array_in_range("a", np.array([0.5, 1.5]), 0.0, 1.0)
  with pytest.raises(ValueError, match="a must have all entries"):
    v.array_in_range("a", np.array([np.nan]), 0.0, 1.0)
  v.finite_array("x", jnp.ones(3))
  with pytest.raises(ValueError, match=r"x must be finite everywhere, found e.g. \[inf\]"):
    v.finite_array("x", jnp.array([1.0, jnp.inf]))
  v.shape("q", np.zeros((2, 3)), (2, None))
  with pytest.raises(ValueError, match=r"q must have shape \[2, \*, 4\], got \[2, 3\]"):
    v.shape("q", np.zeros((2, 3)), (2, None, 4))
  assert v.one_of("kind", "mlp", ["linear", "mlp"]) == "mlp"
  with pytest.raises(ValueError, match=r"kind must be one of \['linear'\], got 'x'"):
    v.one_of("kind", "x", ["linear"])


def test_tracers_are_not_concrete_and_their_value_checks_are_skipped():
  assert v.is_concrete(jnp.ones(2)) and v.concrete(np.arange(3)).tolist() == [0, 1, 2]
  seen = []

  @jax.jit
  def f(x):
    seen.append(v.is_concrete(x))
    v.finite_array("x", x)          # skipped: the value is unknown while tracing
    return x

  f(jnp.array([jnp.nan]))
  assert seen == [False]
