"""The configuration every memory mixer shares; each family's config (Titans, TTT, TNT, ATLAS)
extends it with its own fields, so a shared field has one name and one meaning everywhere.

Gates (per head, from one linear map of the token with a learned bias): the inner learning
rate lr_t = lr_max * sigmoid(.), the momentum decay beta_t = sigmoid(.) (`momentum`), the
forget gate alpha_t = sigmoid(.) (`forget`: the state decays by 1 - alpha_t per token).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax.numpy as jnp

from tnx import validation
from tnx.memory import model as mm
from tnx.nn.layers import dtype_of

QKV_ACTIVATIONS = ("silu", "identity")


def _bool(name: str, value: Any) -> None:
  if not isinstance(value, bool):
    raise ValueError(f"{name} must be a bool, got {value!r}")


@dataclasses.dataclass(frozen=True)
class MemoryLayerConfig:
  """Fields shared by the memory mixers.

  Attributes:
    num_heads: H.  head_dim: K (None: d_model // H, which then must divide d_model).
    conv_width: width of the causal depthwise convs after the q/k(/v) projections (0 = none).
    qkv_activation: "silu" or "identity" after the convs.
    qk_l2_norm: L2-normalize q and k per head.
    lr_max: upper bound of the inner learning rate lr_t = lr_max * sigmoid(.).
    lr_bias_init / momentum_bias_init / forget_bias_init: initial biases of the gates.
    momentum: data-dependent momentum decay beta_t (Titans Eq. 10).
    forget: data-dependent forget gate alpha_t (Titans Eq. 13).
    output_gate: gate the read-out with the token before the output projection.
    inner_loss: the inner (associative-memory) loss, a name in INNER_LOSSES.
    remat_group: chunks per rematerialized group in the backward pass (0 = off; None =
      groups of about 64 tokens, `tnx.memory.chunked.resolve_remat_group`).
    learn_init: the initial memory state is an outer parameter (else a fixed variable).
    dtype: compute dtype (the inner loop runs in it; float32 recommended); param_dtype: of
      the parameters. Either may be given by name ('float32', 'bfloat16', 'float64').
  """

  INNER_LOSSES: ClassVar[tuple[str, ...]] = tuple(mm.INNER_LOSSES)

  num_heads: int = 4
  head_dim: int | None = None
  conv_width: int = 4
  qkv_activation: str = "silu"
  qk_l2_norm: bool = True
  lr_max: float = 0.01
  lr_bias_init: float = -2.0
  momentum: bool = False
  momentum_bias_init: float = 2.0
  forget: bool = False
  forget_bias_init: float = -4.0
  output_gate: bool = True
  inner_loss: str = "squared_l2"
  remat_group: int | None = None
  learn_init: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    validation.positive_int("num_heads", self.num_heads)
    if self.head_dim is not None:
      validation.positive_int("head_dim", self.head_dim)
    validation.non_negative_int("conv_width", self.conv_width)
    validation.one_of("qkv_activation", self.qkv_activation, QKV_ACTIVATIONS)
    validation.positive("lr_max", self.lr_max)
    for name in ("lr_bias_init", "momentum_bias_init", "forget_bias_init"):
      if not math.isfinite(float(getattr(self, name))):
        raise ValueError(f"{name} must be a finite number, got {getattr(self, name)!r}")
    for name in ("qk_l2_norm", "momentum", "forget", "output_gate", "learn_init"):
      _bool(name, getattr(self, name))
    validation.one_of("inner_loss", self.inner_loss, self.INNER_LOSSES)
    if self.remat_group is not None:
      validation.non_negative_int("remat_group", self.remat_group)
    for name in ("dtype", "param_dtype"):
      value = getattr(self, name)
      if isinstance(value, str):
        object.__setattr__(self, name, dtype_of(value))

  def heads(self, d_model: int) -> tuple[int, int]:
    """(H, K) for a layer of width d_model; ValueError if K is not given and H does not
    divide d_model."""
    d_model = validation.positive_int("d_model", d_model)
    if self.head_dim is not None:
      return self.num_heads, self.head_dim
    if d_model % self.num_heads:
      raise ValueError(f"num_heads={self.num_heads} must divide d_model={d_model} (or set "
                       "head_dim explicitly)")
    return self.num_heads, d_model // self.num_heads

  def lr_scale(self, head_dim: int) -> float:
    """The factor in lr_t = lr_scale * sigmoid(.) (lr_max; TTT may also divide by K)."""
    return float(self.lr_max)

  def memory_lr_scale(self, memory: int, head_dim: int) -> float:
    """The factor for memory `memory` of a mixer that runs several (TNT: global, locals);
    one memory per mixer elsewhere, so `lr_scale`."""
    return self.lr_scale(head_dim)

  def rope_period(self) -> int | None:
    """Positions of the RoPE applied to q and k are taken modulo this (None: no RoPE)."""
    return None
