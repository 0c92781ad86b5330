"""Turning per-target influence columns into a selection.

Two target modes (Influence Distillation, arXiv 2505.19051, Sec. 4 and the authors' code):

- 'mean': the target gradient is the mean over target examples, g_T = grad L(theta; T, 1);
  one influence per sample, then robust weights (weights.py) with k non-zeros;
- 'round_robin': one influence column per target example; the targets take turns in a random
  order (fixed for all rounds), each choosing its highest-scoring sample not yet chosen, until
  k are chosen. With m targets each contributes floor(k/m) or ceil(k/m) samples; with m = 1 it
  is top-k.

Only each target's top-k candidates are needed (a target never looks past k entries), so a
sharded score matrix gathers m x k numbers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tnx.selection.influence.weights import check_budget

MODES = ("mean", "round_robin")


def round_robin(scores_NxM: jax.Array, k: int, key: jax.Array) -> np.ndarray:
  """k distinct indices [k] in the order chosen (see the module docstring)."""
  n, m = int(scores_NxM.shape[0]), int(scores_NxM.shape[1])
  k = check_budget(k, n)
  top_MxK = np.asarray(jax.lax.top_k(jnp.asarray(scores_NxM).T, k)[1])
  order = np.asarray(jax.random.permutation(key, m))
  chosen = np.zeros(n, bool)
  pointer = np.zeros(m, np.int64)
  picks: list[int] = []
  t = 0
  while len(picks) < k:
    j = order[t % m]
    while chosen[top_MxK[j, pointer[j]]]:
      pointer[j] += 1
    i = int(top_MxK[j, pointer[j]])
    chosen[i] = True
    picks.append(i)
    t += 1
  return np.asarray(picks, np.int64)
