"""The per-token inputs of one memory, as the NNX mixers produce them and the chunked
primitive (`tnx.memory.chunked`) and the TNT branches (`tnx.tnt.branches`) consume them."""

from __future__ import annotations

from typing import NamedTuple

import jax


class MemoryInputs(NamedTuple):
  """q, k, v [B, H, L, K]; lr [B, H, L] inner learning rates (>= 0); optional decay gates as
  logs [B, H, L] (<= 0, computed from the gate logits so that they stay finite): log_mom_decay
  (log of the factor multiplying the old momentum) and log_retention (log of the factor
  multiplying the old state: 1 - the forget gate). A decode step uses the same fields without
  the L axis."""

  q: jax.Array
  k: jax.Array
  v: jax.Array
  lr: jax.Array
  log_mom_decay: jax.Array | None = None
  log_retention: jax.Array | None = None


def at_step(inputs: MemoryInputs, t: int = 0) -> MemoryInputs:
  """The inputs of token t ([B, H, L, ...] -> [B, H, ...])."""
  return MemoryInputs(*(None if a is None else a[:, :, t] for a in inputs))
