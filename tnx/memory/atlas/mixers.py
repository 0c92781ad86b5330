"""ATLAS-family token mixers (NNX): one class, the model chosen by `AtlasConfig.variant`.

Per token: q/k/v = act(causal depthwise conv(x W_{q,k,v})), q and k L2-normalized per head
(spec 1: the norm type is unconfirmed, L2 is the choice); gates per head from one projection:
  eta_t = lr_max sigmoid(.) (step), alpha_t = sigmoid(.) (retention, when on),
  theta_t = sigmoid(.) (momentum decay, momentum/muon), gamma (window gates: window-owned,
  c per token, or token-owned, 1 per token; spec 2.3 options (b)/(a));
features z = phi(q), phi(k) (identity, polynomial with learnable Taylor coefficients, the
truncated exponential map, or the exact exponential kernel); the memory (linear, MLP, gated
MLP) with residual through the raw key/query; the Omega rule (`omega.omega_memory`); the read
is RMS-normalized per head, gated by sigmoid(x W_g) and projected back. Optional MAG/MAL
hybrid with sliding-window attention (`tnx.nn.attention`, gate `tnx.nn.layers.MAGGate`).

Variant defaults (spec 3.8; every entry is a config field that overrides it when not None):

  variant           loss  features    memory     optimizer  window  retention
  dla               dot   poly        mlp        gd         1       yes
  swla              dot   poly        linear     gd         c       yes
  omeganet          l2    poly        mlp        gd         c       yes
  atlas             l2    poly        mlp        muon       c       yes
  atlas_pp          l2    poly        gated_mlp  muon       c       yes
  deep_transformer  dot   exp_taylor  mlp        gd         1       no
  swdt              dot   exp_taylor  mlp        gd         c       no (unconfirmed)
  dot               l2    exp_taylor  mlp        gd         c       no

(c = `default_window`, 4; the paper does not report c.) `feature_map="exp"` with a linear
memory computes the exact phi* models through the kernel trick (O(L^2), no constant-size
decode; `kernel.py`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tnx import validation
from tnx.memory.atlas import features, inner_optim, kernel, omega
from tnx.memory.atlas import memory as amem
from tnx.nn import conv
from tnx.nn import layers as nnl
from tnx.nn.attention import Attention

_L2, _DOT = "squared_l2", "dot"
VARIANTS: dict[str, dict[str, Any]] = {
    "dla": dict(inner_loss=_DOT, feature_map="poly", memory="mlp", optimizer="gd",
                omega_window=1, retention=True),
    "swla": dict(inner_loss=_DOT, feature_map="poly", memory="linear", optimizer="gd",
                 retention=True),
    "omeganet": dict(inner_loss=_L2, feature_map="poly", memory="mlp", optimizer="gd",
                     retention=True),
    "atlas": dict(inner_loss=_L2, feature_map="poly", memory="mlp", optimizer="muon",
                  retention=True),
    "atlas_pp": dict(inner_loss=_L2, feature_map="poly", memory="gated_mlp", optimizer="muon",
                     retention=True),
    "deep_transformer": dict(inner_loss=_DOT, feature_map="exp_taylor", memory="mlp",
                             optimizer="gd", omega_window=1, retention=False),
    "swdt": dict(inner_loss=_DOT, feature_map="exp_taylor", memory="mlp", optimizer="gd",
                 retention=False),
    "dot": dict(inner_loss=_L2, feature_map="exp_taylor", memory="mlp", optimizer="gd",
                retention=False),
}
FEATURE_MAPS = ("identity", "poly", "exp_taylor", "exp")
HYBRIDS = ("none", "mag", "mal")


@dataclasses.dataclass(frozen=True)
class AtlasConfig:
  """ATLAS-family mixer configuration. Fields left None take the variant's default.

  Attributes:
    variant: one of VARIANTS.  num_heads: H.  head_dim: K (default d_model // H).
    chunk_size: b of the chunked primitive (the anchor period); decode keeps its semantics.
    omega_window: c (None: 1 for dla/deep_transformer, else default_window).
    gamma_mode: "window" (c gates emitted per token) or "token" (one gate per token).
    inner_loss: "squared_l2", "dot" (Hebbian) or another `memory.LOSSES` name.
    feature_map: identity | poly | exp_taylor | exp.  poly_degree: p (poly and exp_taylor).
    poly_mode: kron | sym | sketch.  sketch_dim: m per sketched degree.
    learn_poly_coeffs: Taylor coefficients a_i are outer parameters (poly only).
    memory: linear | mlp | gated_mlp; memory_expansion, memory_activation, memory_init_scale.
    residual: M(x) = x + f(phi(x)) (None: on for deep memories, Eq. 42-43).
    optimizer: gd | momentum | muon; step_placement: outside (Eq. 32) | inside (Titans).
    ns_steps / ns_coeffs: Newton-Schulz steps and quintic coefficients (muon).
    retention: data-dependent alpha_t (off: alpha = 1).
    lr_max and *_bias_init: gate ranges and initial biases (eta ~ 0.12 lr_max, alpha ~ 0.993,
      theta ~ 0.9, gamma ~ 0.95 at init).
    conv_width: causal depthwise convs after q/k/v (0 = off).  qkv_activation: silu | identity.
    output_gate: sigmoid(x W_g) on the read.  hybrid: none | mag | mal.  swa_window.
    remat_group, learn_init, dtype, param_dtype: as in the Titans layer.
  """

  variant: str = "atlas"
  num_heads: int = 4
  head_dim: int | None = None
  chunk_size: int = 16
  omega_window: int | None = None
  default_window: int = 4
  gamma_mode: str = "window"
  inner_loss: str | None = None
  feature_map: str | None = None
  poly_degree: int = 2
  poly_mode: str = "kron"
  sketch_dim: int = 64
  learn_poly_coeffs: bool = True
  memory: str | None = None
  memory_expansion: int = 4
  memory_activation: str = "gelu"
  memory_init_scale: float = 1.0
  residual: bool | None = None
  optimizer: str | None = None
  step_placement: str = "outside"
  ns_steps: int = 5
  ns_coeffs: tuple[float, float, float] = inner_optim.QUINTIC
  retention: bool | None = None
  lr_max: float = 1.0
  lr_bias_init: float = -2.0
  retention_bias_init: float = 5.0
  momentum_bias_init: float = 2.2
  gamma_bias_init: float = 3.0
  conv_width: int = 4
  qkv_activation: str = "silu"
  output_gate: bool = True
  hybrid: str = "none"
  swa_window: int = 64
  remat_group: int | None = None
  learn_init: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    validation.one_of("variant", self.variant, list(VARIANTS))
    validation.positive_int("num_heads", self.num_heads)
    validation.positive_int("chunk_size", self.chunk_size)
    validation.positive_int("default_window", self.default_window)
    validation.one_of("gamma_mode", self.gamma_mode, ("window", "token"))
    validation.one_of("feature_map", self.get("feature_map"), FEATURE_MAPS)
    validation.non_negative_int("poly_degree", self.poly_degree)
    validation.one_of("poly_mode", self.poly_mode, features.FEATURE_MODES)
    validation.one_of("qkv_activation", self.qkv_activation, ("silu", "identity"))
    validation.one_of("hybrid", self.hybrid, HYBRIDS)
    validation.positive_int("swa_window", self.swa_window)
    validation.positive("lr_max", self.lr_max)
    validation.non_negative_int("conv_width", self.conv_width)
    self.rule()
    self.memory_config()
    if self.get("feature_map") == "exp" and self.get("memory") != "linear":
      raise ValueError("feature_map='exp' (exact exponential kernel) needs memory='linear', "
                       f"got memory={self.get('memory')!r}")

  def get(self, name: str) -> Any:
    """The field's value, or the variant default when it is None."""
    value = getattr(self, name)
    if value is not None:
      return value
    if name == "omega_window":
      return VARIANTS[self.variant].get("omega_window", self.default_window)
    if name == "residual":
      return self.get("memory") != "linear"
    return VARIANTS[self.variant][name]

  def rule(self) -> omega.OmegaRule:
    return omega.OmegaRule(window=self.get("omega_window"), optimizer=self.get("optimizer"),
                           step_placement=self.step_placement, ns_steps=self.ns_steps,
                           ns_coeffs=tuple(self.ns_coeffs), inner_loss=self.get("inner_loss"))

  def memory_config(self) -> amem.AtlasMemoryConfig:
    return amem.AtlasMemoryConfig(kind=self.get("memory"), expansion=self.memory_expansion,
                                  activation=self.memory_activation,
                                  init_scale=self.memory_init_scale)


class AtlasMixer(nnx.Module):
  """ATLAS-family token mixer: [B, L, D] -> [B, L, D], with prefill/decode."""

  def __init__(self, d_model: int, cfg: AtlasConfig, *, rngs: nnx.Rngs):
    d_model = validation.positive_int("d_model", d_model)
    self.cfg = cfg
    h = cfg.num_heads
    self.num_heads, self.head_dim = h, cfg.head_dim or d_model // h
    if self.head_dim < 1:
      raise ValueError(f"head_dim must be >= 1; d_model={d_model}, num_heads={h}")
    hk, pd = h * self.head_dim, cfg.param_dtype
    lin = lambda i, o, bias=False: nnx.Linear(i, o, use_bias=bias, dtype=cfg.dtype,
                                               param_dtype=pd, rngs=rngs)
    self.q_proj, self.k_proj, self.v_proj = lin(d_model, hk), lin(d_model, hk), lin(d_model, hk)
    self.convs = nnx.List([conv.CausalDepthwiseConv(hk, cfg.conv_width, rngs=rngs,
                                                      param_dtype=pd)
                           for _ in range(3)]) if cfg.conv_width else None
    c = cfg.get("omega_window")
    n_gamma = c if cfg.gamma_mode == "window" else 1
    bias = [cfg.lr_bias_init] * h + [cfg.retention_bias_init] * h
    bias += [cfg.momentum_bias_init] * h + [cfg.gamma_bias_init] * h * n_gamma
    self.gate_proj = lin(d_model, len(bias), bias=True)
    self.gate_proj.bias = nnx.Param(jnp.asarray(bias, pd))
    fmap, p = cfg.get("feature_map"), cfg.poly_degree
    coeffs = jnp.tile(features.taylor_coefficients(p, pd)[None], (h, 1))
    trainable = fmap == "poly" and cfg.learn_poly_coeffs
    self.poly_coeffs = (nnx.Param if trainable else nnx.Variable)(coeffs)
    self.sketch = nnx.Variable(features.sketch_matrices(rngs.params(), self.head_dim, p,
                                                        cfg.sketch_dim, pd))
    self.feat_dim = (self.head_dim if fmap in ("identity", "exp") else
                     features.feature_dim(self.head_dim, p, cfg.poly_mode, cfg.sketch_dim))
    self.out_norm = nnl.HeadNorm(h, self.head_dim, param_dtype=pd)
    self.out_gate = lin(d_model, hk) if cfg.output_gate else None
    self.o_proj = lin(hk, d_model)
    state = amem.init_memory(cfg.memory_config(), rngs.params(), self.feat_dim, self.head_dim,
                             h, pd)
    kind = nnx.Param if cfg.learn_init else nnx.Variable
    self.init_state = nnx.Dict({n: kind(x) for n, x in state.items()})
    if cfg.hybrid != "none":
      self.swa = Attention(d_model, h, mode="sliding", window=cfg.swa_window, rngs=rngs,
                           dtype=cfg.dtype, param_dtype=pd)
      if cfg.hybrid == "mag":
        self.mag = nnl.MAGGate(d_model, param_dtype=pd)

  # -- projections --------------------------------------------------------------------
  def _project(self, x, conv_state):
    """x [B, L, D] -> q, k, v [B, H, L, K], gates, new conv caches (decode: L = 1)."""
    cfg, h = self.cfg, self.num_heads
    xf = x.astype(cfg.dtype)
    raw = [self.q_proj(xf), self.k_proj(xf), self.v_proj(xf)]
    caches = None
    if self.convs is not None:
      if conv_state is None:
        raw = [conv(r) for conv, r in zip(self.convs, raw)]
      else:
        outs = [conv.step(r[:, 0], cc) for conv, r, cc in zip(self.convs, raw, conv_state)]
        raw, caches = [o[:, None] for o, _ in outs], [cc for _, cc in outs]
    act = jax.nn.silu if cfg.qkv_activation == "silu" else (lambda t: t)
    q, k, v = (nnl.split_heads(act(r), h) for r in raw)
    q, k = nnl.l2_normalize(q), nnl.l2_normalize(k)
    g = jax.nn.sigmoid(self.gate_proj(xf)).transpose(0, 2, 1)  # [B, n_gates, L]
    gates = {"eta": cfg.lr_max * g[:, :h],
             "alpha": g[:, h:2 * h] if cfg.get("retention") else None,
             "theta": g[:, 2 * h:3 * h] if cfg.get("optimizer") != "gd" else None}
    gam = g[:, 3 * h:]
    if cfg.gamma_mode == "window":
      b, _, length = gam.shape
      gam = gam.reshape(b, h, -1, length).transpose(0, 1, 3, 2)  # [B, H, L, c]
    gates["gamma"] = gam
    return q, k, v, gates, caches

  def _features(self, x, side):
    fmap = self.cfg.get("feature_map")
    if fmap in ("identity", "exp"):
      return x
    coeffs = self.poly_coeffs[...].astype(x.dtype)
    fn = lambda xh, ah: features.poly_features(xh, ah, side=side, mode=self.cfg.poly_mode,
                                               sketch=self.sketch[...])
    return jax.vmap(fn, in_axes=(1, 0), out_axes=1)(x, coeffs)

  def _targets(self, k, v):
    if self.cfg.get("residual") and self.cfg.get("inner_loss") != "dot":
      return v - k   # ||k + f(z) - v||-type losses == the same loss of f(z) against v - k
    return v

  def state0(self) -> amem.Params:
    return {n: x[...].astype(self.cfg.dtype) for n, x in self.init_state.items()}

  def _memory(self, x):
    """Parallel memory path: x [B, L, D] -> (read [B, H, L, K], carry | None)."""
    cfg = self.cfg
    q, k, v, gates, _ = self._project(x, None)
    if cfg.get("feature_map") == "exp":
      o = kernel.kernel_memory(cfg.rule(), q, k, self._targets(k, v), chunk_size=cfg.chunk_size,
                               **gates)
      carry = None
    else:
      o, carry = omega.omega_memory(
          cfg.memory_config(), cfg.rule(), self.state0(), self._features(q, "query"),
          self._features(k, "key"), self._targets(k, v), chunk_size=cfg.chunk_size,
          remat_group=cfg.remat_group, **gates)
    return (q + o if cfg.get("residual") else o), carry

  def _output(self, x, o):
    y = nnl.merge_heads(self.out_norm(o))
    if self.out_gate is not None:
      y = y * jax.nn.sigmoid(self.out_gate(x.astype(self.cfg.dtype)))
    return self.o_proj(y).astype(x.dtype)

  def _combine(self, x, y_mem, y_attn=None):
    if self.cfg.hybrid == "mag":
      return self.mag(y_attn, y_mem)
    return y_mem

  # -- forward paths -------------------------------------------------------------------
  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    """Parallel (chunked) forward: [B, L, D] -> [B, L, D]."""
    y = self._output(x_BxLxD, self._memory(x_BxLxD)[0])
    if self.cfg.hybrid == "mal":
      return self.swa(y)
    if self.cfg.hybrid == "mag":
      return self._combine(x_BxLxD, y, self.swa(x_BxLxD))
    return y

  def prefill(self, x_BxLxD: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
    """Parallel forward plus the constant-size decode cache after the last token."""
    if self.cfg.get("feature_map") == "exp":
      raise ValueError("feature_map='exp' (exact exponential kernel) has no constant-size "
                       "decode state; decode with feature_map='poly' (its finite-degree "
                       "approximation)")
    o, carry = self._memory(x_BxLxD)
    y = self._output(x_BxLxD, o)
    conv = None
    if self.convs is not None:
      xf = x_BxLxD.astype(self.cfg.dtype)
      raw = [self.q_proj(xf), self.k_proj(xf), self.v_proj(xf)]
      conv = [c.cache_from(r) for c, r in zip(self.convs, raw)]
    cache = {"memory": carry, "conv": conv}
    if self.cfg.hybrid == "mal":
      y, cache["swa"] = self.swa.prefill(y)
    elif self.cfg.hybrid == "mag":
      y_attn, cache["swa"] = self.swa.prefill(x_BxLxD)
      y = self._combine(x_BxLxD, y, y_attn)
    return y, cache

  def init_cache(self, batch: int) -> dict[str, Any]:
    """The cache before the first token (decode from scratch)."""
    if self.cfg.get("feature_map") == "exp":
      raise ValueError("feature_map='exp' (exact exponential kernel) has no constant-size "
                       "decode state; decode with feature_map='poly' (its finite-degree "
                       "approximation)")
    hk = self.num_heads * self.head_dim
    conv = None if self.convs is None else [c.init_cache(batch, hk, self.cfg.dtype)
                                            for c in self.convs]
    carry = omega.init_carry(self.state0(), batch, self.cfg.rule(), self.feat_dim,
                             self.cfg.dtype)
    cache = {"memory": carry, "conv": conv}
    if self.cfg.hybrid != "none":
      cache["swa"] = self.swa.init_cache(batch)
    return cache

  def decode(self, x_BxD: jax.Array, cache: dict[str, Any]) -> tuple[jax.Array, dict[str, Any]]:
    """One token per sequence: [B, D] -> [B, D] with the chunk semantics of the forward."""
    cfg = self.cfg
    q, k, v, gates, conv = self._project(x_BxD[:, None], cache["conv"])
    sq = lambda a: None if a is None else a[:, :, 0]
    q, k, v = sq(q), sq(k), sq(v)
    gates = {n: sq(g) for n, g in gates.items()}
    o, carry = omega.omega_decode_step(
        cfg.memory_config(), cfg.rule(), cache["memory"], self._features(q[:, :, None],
                                                                          "query")[:, :, 0],
        self._features(k[:, :, None], "key")[:, :, 0], self._targets(k, v),
        chunk_size=cfg.chunk_size, **gates)
    o = q + o if cfg.get("residual") else o
    y = self._output(x_BxD[:, None], o[:, :, None])[:, 0]
    new = {"memory": carry, "conv": conv}
    if cfg.hybrid == "mal":
      y, new["swa"] = self.swa.decode(y, cache["swa"])
    elif cfg.hybrid == "mag":
      y_attn, new["swa"] = self.swa.decode(x_BxD, cache["swa"])
      y = self._combine(x_BxD, y, y_attn)
    return y, new
