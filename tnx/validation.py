"""Argument checks shared across tnx: each raises ValueError naming the argument, the value
received and what was expected. Use these at public entry points (outside `jit`) so bad input
fails loudly instead of being clipped or broadcast silently."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np


def concrete(x: Any) -> np.ndarray | None:
  """`x` as a numpy array, or None when it is a jax tracer (inside jit/vmap/grad), whose
  values cannot be checked; value checks then have to happen before tracing."""
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def is_concrete(x: Any) -> bool:
  return concrete(x) is not None


def positive_int(name: str, value: Any) -> int:
  """Returns `value` as int if it is an integer >= 1, else raises ValueError."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be a positive integer, got {value!r}")
  return int(value)


def non_negative_int(name: str, value: Any) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
    raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
  return int(value)


def positive(name: str, value: Any) -> float:
  """Checks a scalar is finite and > 0."""
  v = float(value)
  if not np.isfinite(v) or v <= 0:
    raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
  return v


def non_negative(name: str, value: Any) -> float:
  v = float(value)
  if not np.isfinite(v) or v < 0:
    raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
  return v


def in_range(name: str, value: Any, low: float, high: float, *, low_open: bool = False,
             high_open: bool = False) -> float:
  """Checks low <= value <= high (open ends as requested) for a scalar."""
  v = float(value)
  ok_low = v > low if low_open else v >= low
  ok_high = v < high if high_open else v <= high
  if not (np.isfinite(v) and ok_low and ok_high):
    lb = "(" if low_open else "["
    rb = ")" if high_open else "]"
    raise ValueError(f"{name} must lie in {lb}{low}, {high}{rb}, got {value!r}")
  return v


def array_in_range(name: str, x: Any, low: float, high: float) -> None:
  """Checks every entry of a concrete array lies in [low, high] (NaN fails)."""
  a = np.asarray(x)
  if a.size and not (np.all(a >= low) and np.all(a <= high)):
    bad = a[~((a >= low) & (a <= high))].ravel()[:3]
    raise ValueError(f"{name} must have all entries in [{low}, {high}], found e.g. {bad.tolist()}")


def finite_array(name: str, x: Any) -> None:
  """Checks every entry of `x` is finite (skipped for jax tracers, whose values are unknown)."""
  a = concrete(x)
  if a is not None and a.size and not np.all(np.isfinite(a)):
    raise ValueError(f"{name} must be finite everywhere, found e.g. "
                     f"{a[~np.isfinite(a)].ravel()[:3].tolist()}")


def one_of(name: str, value: Any, options: Sequence[Any]) -> Any:
  if value not in options:
    raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")
  return value


def shape(name: str, x: Any, expected: Sequence[int | None]) -> None:
  """Checks `x.shape` against `expected`, where None matches any size."""
  got = tuple(np.shape(x))
  if len(got) != len(expected) or any(e is not None and g != e for g, e in zip(got, expected)):
    want = "[" + ", ".join("*" if e is None else str(e) for e in expected) + "]"
    raise ValueError(f"{name} must have shape {want}, got {list(got)}")
