"""Static tables of all feasible allocations, the ground truth for small instances.

An allocation is a partial injection from ads to positions with at most K pairs. There are
`sum_{k<=K} C(n, k) * m! / (m - k)!` of them (n=6, m=4, K=3: 685). Tables are built once in
numpy and cached; the solvers evaluate every allocation with one einsum and take the argmax
(first index on ties, the empty allocation being index 0).
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np

from tnx import validation

MAX_ALLOCATIONS = 2_000_000


def num_allocations(n: int, m: int, k: int) -> int:
  """Number of partial injections with at most k pairs."""
  return sum(math.comb(n, c) * math.perm(m, c) for c in range(min(k, n, m) + 1))


@functools.lru_cache(maxsize=32)
def _table(n: int, m: int, k: int) -> np.ndarray:
  out = np.zeros((num_allocations(n, m, k), n, m), np.float64)
  s = 0
  for c in range(min(k, n, m) + 1):
    for ads in itertools.combinations(range(n), c):
      for pos in itertools.permutations(range(m), c):
        out[s, ads, pos] = 1.0
        s += 1
  out.setflags(write=False)
  return out


def enumerate_allocations(n: int, m: int, k: int) -> np.ndarray:
  """All allocations as a read-only 0/1 tensor of shape (S, n, m).

  Raises:
    ValueError: on non-positive sizes, `k > m`, or a table larger than MAX_ALLOCATIONS.
  """
  n = validation.positive_int("n", n)
  m = validation.positive_int("m", m)
  k = validation.positive_int("K", k)
  if k > m:
    raise ValueError(f"K must be at most the number of positions m={m}, got {k}")
  size = num_allocations(n, m, k)
  if size > MAX_ALLOCATIONS:
    raise ValueError(f"(n, m, K)=({n}, {m}, {k}) has {size} allocations, more than "
                     f"{MAX_ALLOCATIONS}; use a matching or dynamic-programming solver")
  return _table(n, m, k)
