"""Monte Carlo over seeds and settings with `vmap` (one compiled program for all runs), its
Python-loop reference, and mean / standard-error summaries."""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=64)
def _vmapped_program(fn: Callable[..., Any], with_inputs: bool, with_settings: bool):
  def all_runs(keys, inputs, settings):
    extra = (inputs,) if with_inputs else ()
    axes = (0, 0) if with_inputs else (0,)

    def over_keys(s):
      call = (lambda k, *x: fn(k, *x)) if not with_settings else (lambda k, *x: fn(k, *x, s))
      return jax.vmap(call, in_axes=axes)(keys, *extra)

    return jax.vmap(over_keys)(settings) if with_settings else over_keys(None)

  return jax.jit(all_runs)


@functools.lru_cache(maxsize=64)
def _single_program(fn: Callable[..., Any], with_inputs: bool, with_settings: bool):
  def one(key, x, setting):
    args = (x,) if with_inputs else ()
    return fn(key, *args, setting) if with_settings else fn(key, *args)

  return jax.jit(one)


def run_vmapped(fn: Callable[..., Any], keys: jax.Array, settings: Any = None, *,
                inputs: Any = None) -> Any:
  """All runs in one jitted program: fn(key[, input][, setting]) vmapped over the N keys (with
  `inputs`, a pytree with leading axis N, e.g. one data set per seed) and over `settings` (a
  pytree with leading axis S), giving leaves [N, ...] or [S, N, ...]. The compiled program is
  cached per `fn` object, so calling again with the same fn and shapes does not recompile."""
  prog = _vmapped_program(fn, inputs is not None, settings is not None)
  return prog(keys, inputs, settings)


def run_loop(fn: Callable[..., Any], keys: jax.Array, settings: Any = None, *,
             inputs: Any = None) -> Any:
  """The same results as `run_vmapped` from a Python loop (one jitted call per run)."""
  f = _single_program(fn, inputs is not None, settings is not None)
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
