"""Monte Carlo over seeds and settings with `vmap` (one compiled program for all runs), its
Python-loop reference, and mean / standard-error summaries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


def stack(trees: Sequence[Any]) -> Any:
  """Stacks per-seed pytrees (e.g. data sets from `linreg.sample`) along a new leading axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def run_vmapped(fn: Callable[..., Any], keys: jax.Array, settings: Any = None, *,
                inputs: Any = None) -> Any:
  """All runs in one jitted program: fn(key[, input][, setting]) vmapped over the N keys (with
  `inputs`, a pytree with leading axis N, e.g. one data set per seed) and over `settings` (a
  pytree with leading axis S), giving leaves [N, ...] or [S, N, ...]."""
  def all_runs(keys, inputs, settings):
    extra = () if inputs is None else (inputs,)
    axes = (0,) + ((0,) if inputs is not None else ())

    def over_keys(s):
      call = (lambda k, *x: fn(k, *x)) if settings is None else (lambda k, *x: fn(k, *x, s))
      return jax.vmap(call, in_axes=axes)(keys, *extra)

    return over_keys(None) if settings is None else jax.vmap(over_keys)(settings)

  return jax.jit(all_runs)(keys, inputs, settings)


def run_loop(fn: Callable[..., Any], keys: jax.Array, settings: Any = None, *,
             inputs: Any = None) -> Any:
  """The same results as `run_vmapped` from a Python loop (one jitted call per run)."""
  def one(key, x, setting):
    args = () if x is None else (x,)
    return fn(key, *args) if setting is None else fn(key, *args, setting)

  f = jax.jit(one)
  n = keys.shape[0]
  pick = lambda tree, i: None if tree is None else jax.tree.map(lambda a: a[i], tree)
  if settings is None:
    return stack([f(keys[i], pick(inputs, i), None) for i in range(n)])
  s = jax.tree.leaves(settings)[0].shape[0]
  return stack([stack([f(keys[i], pick(inputs, i), pick(settings, j)) for i in range(n)])
                for j in range(s)])


def mean_se(x: Any, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(mean, standard error of the mean) over `axis`."""
  a = np.asarray(x, np.float64)
  n = a.shape[axis]
  return a.mean(axis), a.std(axis, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(a.mean(axis))
