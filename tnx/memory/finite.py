"""Causality under non-finite values, and the opt-in finiteness check of the memory primitives.

A NaN or inf in one token's key, value or gate must reach only the outputs that depend on that
token. Masked products do not give that: 0 * NaN is NaN, so a matmul over a causal mask (the
intra-chunk dual form, the coefficient products, the Q-K projection's running sums) lets a bad
token at t poison every row. The primitives therefore select instead: tokens with a non-finite
entry are replaced by zeros before any cross-token arithmetic (`clean_rows`), and afterwards
every output that depends on such a token is set to NaN (`poison_after`), as is the state
after it; finite inputs pass through both selects unchanged (bit for bit, gradients too).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tnx import validation


def nonfinite_rows(arrays: Sequence[jax.Array | None], n: int) -> jax.Array:
  """[n] bool: whether row i (leading axis) of any array has a non-finite entry."""
  bad = jnp.zeros((n,), bool)
  for a in arrays:
    if a is not None:
      bad = bad | ~jnp.all(jnp.isfinite(a.reshape(n, -1)), axis=1)
  return bad


def clean_rows(x: jax.Array | None, bad: jax.Array) -> jax.Array | None:
  """x with the rows flagged in `bad` [n] replaced by zeros (a select, not a product)."""
  if x is None:
    return None
  return jnp.where(bad.reshape(bad.shape + (1,) * (x.ndim - 1)), jnp.zeros_like(x), x)


def poison_after(x: jax.Array, bad: jax.Array) -> jax.Array:
  """x with every row at or after the first flagged row set to NaN (rows = leading axis)."""
  after = jnp.cumsum(bad.astype(jnp.int32)) > 0
  return jnp.where(after.reshape(after.shape + (1,) * (x.ndim - 1)), jnp.nan, x)


def poison_tree(tree, flag: jax.Array):
  """Every leaf set to NaN where the scalar `flag` is true."""
  return jax.tree.map(lambda x: jnp.where(flag, jnp.nan, x), tree)


def first_nonfinite(flags_BxHxL: np.ndarray) -> tuple[int, int, int] | None:
  """(b, h, t) of the earliest token t flagged in any (batch row, head), or None."""
  if not flags_BxHxL.any():
    return None
  t = int(np.argmax(flags_BxHxL.any(axis=(0, 1))))
  b, h = (int(i) for i in np.argwhere(flags_BxHxL[:, :, t])[0])
  return b, h, t


def report(where: str, flags_BxHxL, inputs_bad_BxHxL) -> None:
  """Raises FloatingPointError naming the first non-finite token and head (concrete flags), or
  schedules the same check at run time with `jax.debug.callback` (traced flags; the error then
  surfaces as the runtime error of the jitted call)."""

  def check(flags, inputs_bad):
    found = first_nonfinite(np.asarray(flags))
    if found is None:
      return
    b, h, t = found
    cause = ("the inputs (k, v, lr or a gate) are non-finite at that token"
             if bool(np.asarray(inputs_bad)[b, h, t]) else
             "its inputs are finite: the inner loop diverged (lower the inner learning rate "
             "or normalize the keys; see the stable range in the docstring)")
    raise FloatingPointError(f"{where}: the inner loop first becomes non-finite at token {t} "
                             f"of head {h} (batch row {b}); {cause}")

  flags = validation.concrete(flags_BxHxL)
  inputs_bad = validation.concrete(inputs_bad_BxHxL)
  if flags is not None and inputs_bad is not None:
    check(flags, inputs_bad)
  else:
    jax.debug.callback(check, flags_BxHxL, inputs_bad_BxHxL)
