"""Monte Carlo over seeds and settings with `vmap` (one compiled program for all runs), its
Python-loop reference, and mean / standard-error summaries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tnx import validation


def seed_keys(num_seeds: int, base_seed: int = 0) -> jax.Array:
  """`num_seeds` independent keys; seed s is the same key in every experiment (common random
  numbers: the same seed gives every method the same data and batch draws)."""
  validation.positive_int("num_seeds", num_seeds)
  return jax.vmap(lambda s: jax.random.fold_in(jax.random.key(base_seed), s))(
      jnp.arange(num_seeds))


def run_vmapped(fn: Callable[..., Any], keys: jax.Array, settings: Any = None, *,
                prepare: Callable[[jax.Array], Any] | None = None) -> Any:
  """All runs in one jitted program: fn(key[, inputs][, setting]) vmapped over keys (and over
  `settings`, a pytree with a leading axis S), giving leaves [N, ...] or [S, N, ...].

  `prepare(key) -> inputs` builds per-seed inputs (data sets) with `lax.map`, i.e. one seed
  after another: XLA on CPU compiles vmapped threefry generation of large arrays very slowly
  (tens of seconds), while the training itself vmaps well.
  """
  def all_runs(keys, settings):
    inputs = () if prepare is None else (jax.lax.map(prepare, keys),)
    call = lambda k, x, s: fn(k, *x) if settings is None else fn(k, *x, s)
    over_keys = lambda s: jax.vmap(lambda k, *x: call(k, x, s))(keys, *inputs)
    return over_keys(None) if settings is None else jax.vmap(over_keys)(settings)

  return jax.jit(all_runs)(keys, settings)


def run_loop(fn: Callable[..., Any], keys: jax.Array, settings: Any = None, *,
             prepare: Callable[[jax.Array], Any] | None = None) -> Any:
  """The same results as `run_vmapped` from a Python loop (one jitted call per run)."""
  def one(key, setting):
    args = () if prepare is None else (prepare(key),)
    return fn(key, *args) if setting is None else fn(key, *args, setting)

  f = jax.jit(one)
  n = keys.shape[0]
  stack = lambda outs: jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
  if settings is None:
    return stack([f(keys[i], None) for i in range(n)])
  s = jax.tree.leaves(settings)[0].shape[0]
  rows = []
  for j in range(s):
    setting = jax.tree.map(lambda x, j=j: x[j], settings)
    rows.append(stack([f(keys[i], setting) for i in range(n)]))
  return stack(rows)


def mean_se(x: Any, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(mean, standard error of the mean) over `axis`."""
  a = np.asarray(x, np.float64)
  n = a.shape[axis]
  return a.mean(axis), a.std(axis, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(a.mean(axis))
