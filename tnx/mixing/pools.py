"""Per-domain example pools as padded arrays, so K domains of different sizes live in one pytree
that `jit`, `vmap` and `scan` accept.

A pool holds `data`, a pytree whose leaves are [K, N, ...] (N = the largest domain; rows past
n_i are zero padding, never drawn), and `n`, the [K] int32 example counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tnx.mixing import weights as W


class Pools(NamedTuple):
  data: Any       # pytree of [K, N, ...] leaves
  n: jax.Array    # [K] int32

  @property
  def num_domains(self) -> int:
    return int(self.n.shape[0])

  @property
  def n_max(self) -> int:
    return int(jax.tree.leaves(self.data)[0].shape[1])


def from_domains(domains: Sequence[Any], name: str = "domains") -> Pools:
  """Stacks K per-domain pytrees (leaves [n_i, ...], same structure and trailing shapes) into a
  padded Pools. Raises ValueError for no domains, an empty domain, or mismatched structure."""
  if len(domains) == 0:
    raise ValueError(f"{name} must hold at least one domain, got none")
  struct = jax.tree.structure(domains[0])
  counts = []
  for i, d in enumerate(domains):
    if jax.tree.structure(d) != struct:
      raise ValueError(f"{name}[{i}] has a different structure from {name}[0]: "
                       f"{jax.tree.structure(d)} vs {struct}")
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree.leaves(d)}
    if len(sizes) != 1 or None in sizes:
      raise ValueError(f"{name}[{i}] leaves must share a leading example axis, got sizes "
                       f"{sorted(map(str, sizes))}")
    counts.append(sizes.pop())
  W.check_counts(np.asarray(counts), len(domains), name=f"{name} (examples per domain)")
  n_max = max(counts)

  def stack(*leaves):
    tail = {np.shape(x)[1:] for x in leaves}
    if len(tail) != 1:
      raise ValueError(f"{name}: per-example shapes differ across domains: {sorted(tail)}")
    pad = lambda x: np.pad(np.asarray(x), [(0, n_max - len(x))] + [(0, 0)] * (np.ndim(x) - 1))
    return jnp.asarray(np.stack([pad(x) for x in leaves]))

  return Pools(jax.tree.map(stack, *domains), jnp.asarray(counts, jnp.int32))


def domain(pools: Pools, i: int) -> Any:
  """Domain i's examples without padding (host-side; leaves [n_i, ...])."""
  n = int(pools.n[i])
  return jax.tree.map(lambda x: x[i, :n], pools.data)


def split(domains: Sequence[Any], n_val: Sequence[int] | int, seed: int = 0
          ) -> tuple[list[Any], list[Any]]:
  """Random (seeded) train/validation split of each domain: n_val[i] examples go to validation.
  The validation part is independent of the examples used for gradients."""
  n_val = [n_val] * len(domains) if isinstance(n_val, int) else list(n_val)
  if len(n_val) != len(domains):
    raise ValueError(f"n_val must have one entry per domain ({len(domains)}), got {n_val}")
  rng = np.random.default_rng(seed)
  train, val = [], []
  for i, (d, m) in enumerate(zip(domains, n_val)):
    n = jax.tree.leaves(d)[0].shape[0]
    if not 1 <= m < n:
      raise ValueError(f"n_val[{i}]={m} must be in [1, {n - 1}] for a domain of {n} examples")
    perm = rng.permutation(n)
    train.append(jax.tree.map(lambda x, p=perm[m:]: np.asarray(x)[p], d))
    val.append(jax.tree.map(lambda x, p=perm[:m]: np.asarray(x)[p], d))
  return train, val


def per_domain_mean(values_KxN: jax.Array, n_K: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(mean, population variance) over the first n_i entries of each row ([K] each)."""
  mask = jnp.arange(values_KxN.shape[1])[None, :] < n_K[:, None]
  cnt = n_K.astype(values_KxN.dtype)
  mean = jnp.sum(jnp.where(mask, values_KxN, 0.0), axis=1) / cnt
  var = jnp.sum(jnp.where(mask, (values_KxN - mean[:, None]) ** 2, 0.0), axis=1) / cnt
  return mean, var
