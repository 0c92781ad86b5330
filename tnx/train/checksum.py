"""Checksums of every array in a pytree, computed on the devices where the arrays live.

For an array with bit-pattern words w_i (uint32; 8-byte dtypes give two words per element,
1- and 2-byte dtypes one) and a per-position hash h(i) (the murmur3 finalizer of the flat
index, made odd), the checksum is the pair

  s1 = sum_i w_i * h1(i)  mod 2^32,      s2 = sum_i (w_i xor (w_i >> 13)) * h2(i)  mod 2^32,

plus the element count. Modular sums are associative and commutative, so the result does not
depend on how the array is sharded over devices or hosts (each host needs only its shards),
and a change of any single word always changes s1 (h1 is odd, so it is invertible mod 2^32).
Several changed words go undetected with probability about 2^-64.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_U32 = jnp.uint32


def _mix(h: jax.Array) -> jax.Array:
  """murmur3's 32-bit finalizer (a bijection on uint32)."""
  h = h ^ (h >> 16)
  h = h * _U32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * _U32(0xC2B2AE35)
  return h ^ (h >> 16)


def _words(x: jax.Array) -> jax.Array:
  """The bit patterns of `x` as uint32 words (shape x.shape or x.shape + (2,))."""
  if x.dtype == jnp.bool_:
    return x.astype(_U32)
  size = jnp.dtype(x.dtype).itemsize
  if size == 4:
    return jax.lax.bitcast_convert_type(x, _U32)
  if size == 8:
    return jax.lax.bitcast_convert_type(x, _U32)  # trailing axis of 2 words
  if size == 2:
    return jax.lax.bitcast_convert_type(x, jnp.uint16).astype(_U32)
  if size == 1:
    return jax.lax.bitcast_convert_type(x, jnp.uint8).astype(_U32)
  raise ValueError(f"cannot checksum dtype {x.dtype}")


def _array_checksum(x: jax.Array) -> jax.Array:
  w = _words(jnp.asarray(x))
  flat = jnp.zeros(w.shape, _U32)
  stride = 1
  for d in reversed(range(w.ndim)):  # the flat index, built without a (resharding) reshape
    flat = flat + jax.lax.broadcasted_iota(_U32, w.shape, d) * _U32(stride % 2**32)
    stride *= w.shape[d]
  h1 = _mix(flat) | _U32(1)
  h2 = _mix(flat ^ _U32(0x5BD1E995)) | _U32(1)
  s1 = jnp.sum(w * h1, dtype=_U32)
  s2 = jnp.sum((w ^ (w >> 13)) * h2, dtype=_U32)
  return jnp.stack([s1, s2])


_tree_checksums = jax.jit(lambda tree: jax.tree.map(_array_checksum, tree))


def leaf_names(tree: Any) -> list[str]:
  """'a/b/0'-style names of the leaves of `tree`, in flattening order."""
  return [jax.tree_util.keystr(p, simple=True, separator="/")
          for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def checksums(tree: Any) -> dict[str, str]:
  """{leaf name: 'hex(s1)hex(s2)-count'} for every array leaf of `tree`."""
  sums = jax.device_get(_tree_checksums(tree))
  leaves = jax.tree.leaves(tree)
  out = {}
  for name, s, x in zip(leaf_names(tree), jax.tree.leaves(sums), leaves):
    s = np.asarray(s, np.uint32)
    out[name] = f"{int(s[0]):08x}{int(s[1]):08x}-{int(np.prod(np.shape(x)))}"
  return out


def mismatches(tree: Any, expected: dict[str, str]) -> list[str]:
  """Names of the leaves of `tree` whose checksum differs from `expected` (or is missing)."""
  got = checksums(tree)
  return [k for k in got if expected.get(k) != got[k]] + [k for k in expected if k not in got]
