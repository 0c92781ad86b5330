"""Random sketches that shrink gradient vectors [P] -> [K] while preserving inner products.

Both are seeded linear maps S with E[S^T S] = I, so <Sx, Sy> is an unbiased estimate of <x, y>:

- `RademacherSketch`: S = R / sqrt(K) with R a P x K matrix of random signs, generated in row
  blocks from the seed so it is never stored whole.
- `SRHTSketch` (subsampled randomized Hadamard transform): pad x to D = 2^ceil(log2 P),
  flip signs at random, apply the orthonormal Walsh-Hadamard transform H (a fast O(D log D)
  butterfly), keep K of the D coordinates chosen without replacement and scale by sqrt(D/K).

Distortion (used by the tests): for unit vectors x, y the error <Sx, Sy> - <x, y> has mean 0
and standard deviation at most sqrt((1 + <x, y>^2) / K) for the Rademacher sketch (exact), and
about sqrt((1 + <x, y>^2)(D - K) / ((D - 1) K)) for the SRHT (the randomized Hadamard
transform spreads any vector evenly over the D coordinates, after which subsampling K of them
without replacement has this variance; the finite-population factor makes K = D exact).
Influence Distillation (arXiv 2505.19051) projects landmark gradients with a randomized
Hadamard sketch; this is the textbook one-pass SRHT.

Dimension letters: P input size, D padded power of two, K sketch size.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from tnx import validation


def fwht(x: jax.Array) -> jax.Array:
  """Orthonormal Walsh-Hadamard transform over the last axis (length a power of two)."""
  d = x.shape[-1]
  if d & (d - 1):
    raise ValueError(f"fwht needs a power-of-two length, got {d}")
  lead = x.shape[:-1]
  h = 1
  while h < d:
    y = x.reshape(lead + (d // (2 * h), 2, h))
    a, b = y[..., 0, :], y[..., 1, :]
    x = jnp.stack([a + b, a - b], axis=-2).reshape(lead + (d,))
    h *= 2
  return x / math.sqrt(d)


@dataclasses.dataclass(frozen=True)
class RademacherSketch:
  """x_P -> R^T x / sqrt(K) with R[P, K] random signs from `seed` (built in row blocks)."""

  input_dim: int
  dim: int
  seed: int = 0
  block_rows: int = 4096

  def __post_init__(self):
    validation.positive_int("input_dim", self.input_dim)
    validation.positive_int("dim", self.dim)
    validation.positive_int("block_rows", self.block_rows)

  def __call__(self, x_P: jax.Array) -> jax.Array:
    return self.apply(x_P, jax.random.key(self.seed))

  def apply(self, x_P: jax.Array, key: jax.Array) -> jax.Array:
    """The sketch drawn from `key` instead of the seed (vmappable over keys)."""
    if x_P.shape[-1] != self.input_dim:
      raise ValueError(f"sketch input must have {self.input_dim} entries, got {x_P.shape}")
    rows = min(self.block_rows, self.input_dim)
    nblocks = -(-self.input_dim // rows)
    pad = nblocks * rows - self.input_dim
    xb = jnp.pad(x_P, [(0, 0)] * (x_P.ndim - 1) + [(0, pad)])
    xb = xb.reshape(x_P.shape[:-1] + (nblocks, rows))

    def body(acc, i):
      r = jax.random.rademacher(jax.random.fold_in(key, i), (rows, self.dim), x_P.dtype)
      return acc + jnp.take(xb, i, axis=-2) @ r, None

    acc0 = jnp.zeros(x_P.shape[:-1] + (self.dim,), x_P.dtype)
    acc, _ = jax.lax.scan(body, acc0, jnp.arange(nblocks))
    return acc / math.sqrt(self.dim)

  def matrix(self) -> jax.Array:
    """The dense P x K map (for tests and small P)."""
    return jax.jit(jax.vmap(self))(jnp.eye(self.input_dim))


@dataclasses.dataclass(frozen=True)
class SRHTSketch:
  """x_P -> sqrt(D/K) * (H diag(s) pad(x))[idx] with random signs s and K sampled coordinates
  (without replacement), both from `seed`."""

  input_dim: int
  dim: int
  seed: int = 0

  def __post_init__(self):
    validation.positive_int("input_dim", self.input_dim)
    validation.positive_int("dim", self.dim)
    if self.dim > self.padded_dim:
      raise ValueError(f"dim={self.dim} exceeds the padded input size {self.padded_dim} "
                       f"(input_dim={self.input_dim}); an SRHT cannot enlarge its input")

  @property
  def padded_dim(self) -> int:
    return 1 << max(0, math.ceil(math.log2(self.input_dim)))

  def __call__(self, x_P: jax.Array) -> jax.Array:
    return self.apply(x_P, jax.random.key(self.seed))

  def apply(self, x_P: jax.Array, key: jax.Array) -> jax.Array:
    """The sketch drawn from `key` instead of the seed (vmappable over keys)."""
    if x_P.shape[-1] != self.input_dim:
      raise ValueError(f"sketch input must have {self.input_dim} entries, got {x_P.shape}")
    d = self.padded_dim
    k_signs, k_idx = jax.random.split(key)
    signs = jax.random.rademacher(k_signs, (d,), x_P.dtype)
    idx = jax.random.choice(k_idx, d, (self.dim,), replace=False)
    x = jnp.pad(x_P, [(0, 0)] * (x_P.ndim - 1) + [(0, d - self.input_dim)])
    y = fwht(x * signs)
    return jnp.take(y, idx, axis=-1) * math.sqrt(d / self.dim)


def make_sketch(kind: str, input_dim: int, dim: int, seed: int = 0
                ) -> RademacherSketch | SRHTSketch | None:
  """'none' -> None, 'rademacher' or 'srht' -> the sketch [input_dim] -> [dim]."""
  validation.one_of("sketch", kind, ("none", "rademacher", "srht"))
  if kind == "none":
    return None
  if kind == "rademacher":
    return RademacherSketch(input_dim, dim, seed)
  return SRHTSketch(input_dim, dim, seed)
