"""ATLAS-family memory mixers: one class, the model chosen by `AtlasConfig.variant`.

Per token: q/k/v = act(causal depthwise conv(x W_{q,k,v})), q and k L2-normalized per head
(the paper does not fix the normalization; L2 is the choice, as in the Titans layer); gates
per head from one projection: eta_t = lr_max sigmoid(.) (step), alpha_t = 1 - sigmoid(.)
(retention, from the shared forget gate, when `forget`), theta_t = sigmoid(.) (momentum decay,
when `momentum`, i.e. for the momentum and Muon optimizers), gamma (window gates: c per token,
window-owned, or 1 per token, token-owned; `gamma_mode`); features z = phi(q), phi(k)
(identity, polynomial with learnable Taylor coefficients, the truncated exponential map, or
the exact exponential kernel); the memory (linear, MLP, gated MLP) with residual through the
raw key/query; the Omega rule (`tnx.memory.chunked.chunked_memory` with a window); the read
is RMS-normalized per head, gated by sigmoid(x W_g) and projected back. The MAG/MAL hybrids
with sliding-window attention are the Titans layouts (`tnx.models.titans_layouts`, mixer
names `atlas_mag` / `atlas_mal`).

Variant defaults (every entry is a config field that overrides it when not None):

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
from typing import Any, ClassVar

import jax
from flax import nnx

from tnx import validation
from tnx.memory import chunked, inner_optim
from tnx.memory import model as mm
from tnx.memory.atlas import features, kernel
from tnx.memory.inputs import MemoryInputs
from tnx.memory.mixer import (
    MemoryMixer,
    Projection,
    ReadOut,
    family_heads,
    read_state,
    state_variables,
)
from tnx.memory.mixer_config import MemoryLayerConfig

_L2, _DOT = "squared_l2", "dot"
VARIANTS: dict[str, dict[str, Any]] = {
    "dla": dict(inner_loss=_DOT, feature_map="poly", memory="mlp", optimizer="gd",
                omega_window=1, forget=True, lr_max=0.1),
    "swla": dict(inner_loss=_DOT, feature_map="poly", memory="linear", optimizer="gd",
                 forget=True, lr_max=1.0),
    "omeganet": dict(inner_loss=_L2, feature_map="poly", memory="mlp", optimizer="gd",
                     forget=True, lr_max=0.1),
    "atlas": dict(inner_loss=_L2, feature_map="poly", memory="mlp", optimizer="muon",
                  forget=True, lr_max=1.0),
    "atlas_pp": dict(inner_loss=_L2, feature_map="poly", memory="gated_mlp", optimizer="muon",
                     forget=True, lr_max=1.0),
    "deep_transformer": dict(inner_loss=_DOT, feature_map="exp_taylor", memory="mlp",
                             optimizer="gd", omega_window=1, forget=False, lr_max=0.03),
    "swdt": dict(inner_loss=_DOT, feature_map="exp_taylor", memory="mlp", optimizer="gd",
                 forget=False, lr_max=0.01),
    "dot": dict(inner_loss=_L2, feature_map="exp_taylor", memory="mlp", optimizer="gd",
                forget=False, lr_max=0.03),
}
FEATURE_MAPS = ("identity", "poly", "exp_taylor", "exp")
NO_DECODE = ("feature_map='exp' (exact exponential kernel) has no constant-size decode state; "
             "decode with feature_map='poly' (its finite-degree approximation)")


@dataclasses.dataclass(frozen=True)
class AtlasConfig(MemoryLayerConfig):
  """ATLAS-family mixer: the shared fields (`MemoryLayerConfig`) plus the family's. Fields left
  None take the variant's default, resolved at construction.

  Attributes:
    variant: one of VARIANTS.
    chunk_size: b of the chunked primitive (the anchor period); decode keeps its semantics.
    omega_window: c (None: 1 for dla/deep_transformer, else default_window).
    gamma_mode: "window" (c gates emitted per token) or "token" (one gate per token).
    inner_loss: "squared_l2", "dot" (Hebbian) or another `memory.LOSSES` name.
    feature_map: identity | poly | exp_taylor | exp.  poly_degree: p (poly and exp_taylor).
    poly_mode: kron | sym | sketch.  sketch_dim: m per sketched degree.
    learn_poly_coeffs: Taylor coefficients a_i are outer parameters (poly only).
    memory: the memory network (`MemoryModelConfig.from_kind`: linear | mlp | gated_mlp,
      expansion, activation, init scale); None: the variant's kind with expansion 4, GELU.
    residual: M(x) = x + f(phi(x)) (None: on for deep memories, Eq. 42-43).
    optimizer: gd | momentum | muon; step_placement: outside (Eq. 32) | inside (Titans).
    ns_steps / ns_coeffs: Newton-Schulz steps and quintic coefficients (muon).
    momentum: implied by the optimizer (None; True for momentum/muon).
    forget: data-dependent retention alpha_t = 1 - forget gate (None: the variant's).
    lr_max: bound of the step eta_t (None: the variant's). Muon steps are normalized (1.0);
      the gd variants use the largest of {1, 0.1, 0.03, 0.01} at which the default layer's
      read stays bounded on 512 tokens of N(0, 1) input with a 3x margin (omeganet, dla 0.1;
      dot, deep_transformer 0.03; swdt 0.01; swla 1.0): at 1.0 their inner loops diverge
      (docs/numerics.md).
    gamma_bias_init: initial bias of the window gates. With the other defaults the gates start
      at eta ~ 0.12 lr_max, alpha ~ 0.993, theta ~ 0.9, gamma ~ 0.95.
  """

  INNER_LOSSES: ClassVar[tuple[str, ...]] = tuple(mm.INNER_LOSSES)

  variant: str = "atlas"
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
  memory: mm.MemoryModelConfig | None = None
  residual: bool | None = None
  optimizer: str | None = None
  step_placement: str = "outside"
  ns_steps: int = 5
  ns_coeffs: tuple[float, float, float] = inner_optim.QUINTIC
  momentum: bool | None = None
  forget: bool | None = None
  lr_max: float | None = None
  momentum_bias_init: float = 2.2
  forget_bias_init: float = -5.0
  gamma_bias_init: float = 3.0

  def __post_init__(self):
    validation.one_of("variant", self.variant, list(VARIANTS))
    defaults = VARIANTS[self.variant]
    resolve = lambda name, value: (object.__setattr__(self, name, value)
                                   if getattr(self, name) is None else None)
    for name in ("inner_loss", "feature_map", "optimizer", "forget", "lr_max"):
      resolve(name, defaults[name])
    resolve("omega_window", defaults.get("omega_window", self.default_window))
    resolve("memory", mm.MemoryModelConfig.from_kind(defaults["memory"]))
    if not isinstance(self.memory, mm.MemoryModelConfig):
      raise ValueError(f"memory must be a MemoryModelConfig, got {self.memory!r}")
    resolve("residual", self.memory.kind != "linear")
    validation.one_of("optimizer", self.optimizer, inner_optim.OPTIMIZERS)
    implied = self.optimizer != "gd"
    if self.momentum is not None and self.momentum != implied:
      raise ValueError(f"momentum={self.momentum} contradicts optimizer={self.optimizer!r}: "
                       "the momentum and muon optimizers have momentum, gd has none")
    object.__setattr__(self, "momentum", implied)
    super().__post_init__()
    validation.positive_int("chunk_size", self.chunk_size)
    validation.positive_int("default_window", self.default_window)
    validation.one_of("gamma_mode", self.gamma_mode, ("window", "token"))
    validation.one_of("feature_map", self.feature_map, FEATURE_MAPS)
    validation.non_negative_int("poly_degree", self.poly_degree)
    validation.one_of("poly_mode", self.poly_mode, features.FEATURE_MODES)
    validation.positive_int("sketch_dim", self.sketch_dim)
    self.rule()
    if self.feature_map == "exp" and self.memory.kind != "linear":
      raise ValueError("feature_map='exp' (exact exponential kernel) needs memory='linear', "
                       f"got memory={self.memory.kind!r}")

  def rule(self) -> chunked.UpdateRule:
    return chunked.UpdateRule(window=self.omega_window, optimizer=self.optimizer,
                              step_placement=self.step_placement, ns_steps=self.ns_steps,
                              ns_coeffs=tuple(self.ns_coeffs), inner_loss=self.inner_loss)

  def memory_config(self) -> mm.MemoryModelConfig:
    return self.memory


class OmegaMemory(nnx.Module):
  """The Omega-rule memory of one ATLAS mixer: feature maps (Taylor coefficients, sketch
  matrices), the learned initial state, forward / decode through the memory primitive
  (`tnx.memory.chunked`, or `kernel` for the exact exponential kernel)."""

  def __init__(self, cfg: AtlasConfig, num_heads: int, head_dim: int, *, rngs: nnx.Rngs):
    pd, p = cfg.param_dtype, cfg.poly_degree
    coeffs = features.taylor_coefficients(p, pd)[None].repeat(num_heads, 0)
    trainable = cfg.feature_map == "poly" and cfg.learn_poly_coeffs
    self.poly_coeffs = (nnx.Param if trainable else nnx.Variable)(coeffs)
    self.sketch = nnx.Variable(features.sketch_matrices(rngs.params(), head_dim, p,
                                                        cfg.sketch_dim, pd))
    self.feat_dim = (head_dim if cfg.feature_map in ("identity", "exp") else
                     features.feature_dim(head_dim, p, cfg.poly_mode, cfg.sketch_dim))
    state = mm.init_state(cfg.memory, rngs.params(), self.feat_dim, num_heads, pd,
                          out_dim=head_dim)
    self.init_state = state_variables(state, cfg.learn_init)

  def state0(self, cfg: AtlasConfig) -> mm.State:
    return read_state(self.init_state, cfg.dtype)

  def _features(self, cfg: AtlasConfig, x_BxHxLxK: jax.Array, side: str) -> jax.Array:
    if cfg.feature_map in ("identity", "exp"):
      return x_BxHxLxK
    coeffs = self.poly_coeffs[...].astype(x_BxHxLxK.dtype)
    fn = lambda xh, ah: features.poly_features(xh, ah, side=side, mode=cfg.poly_mode,
                                               sketch=self.sketch[...])
    return jax.vmap(fn, in_axes=(1, 0), out_axes=1)(x_BxHxLxK, coeffs)

  @staticmethod
  def _rule_inputs(cfg: AtlasConfig, inp: MemoryInputs, gates: dict) -> tuple[Any, dict]:
    """Targets (v - k for a residual memory under a squared-type loss: ||k + f(z) - v|| is
    the same loss of f(z) against v - k) and the Omega gates."""
    residual = cfg.residual and cfg.inner_loss != "dot"
    gamma = gates["gamma"][..., 0] if cfg.gamma_mode == "token" else gates["gamma"]
    return (inp.v - inp.k if residual else inp.v), dict(
        lr=inp.lr, log_retention=inp.log_retention, log_mom_decay=inp.log_mom_decay,
        window_gate=gamma)

  def __call__(self, cfg: AtlasConfig, inputs: list[MemoryInputs], gates: dict, *,
               with_carry: bool = False) -> tuple[jax.Array, Any]:
    (inp,) = inputs
    targets, rule_gates = self._rule_inputs(cfg, inp, gates)
    if cfg.feature_map == "exp":
      if with_carry:
        raise ValueError(NO_DECODE)
      o = kernel.kernel_memory(cfg.rule(), inp.q, inp.k, targets, chunk_size=cfg.chunk_size,
                               **rule_gates)
      carry = None
    else:
      o, carry = chunked.chunked_memory(
          cfg.memory, self.state0(cfg), inp.q, inp.k, targets, chunk_size=cfg.chunk_size,
          rule=cfg.rule(), feature_map=lambda x, side: self._features(cfg, x, side),
          remat_group=cfg.remat_group, **rule_gates)
    return (inp.q + o if cfg.residual else o), carry

  def init_carry(self, cfg: AtlasConfig, batch: int) -> chunked.MemoryCarry:
    if cfg.feature_map == "exp":
      raise ValueError(NO_DECODE)
    return chunked.init_carry(self.state0(cfg), batch, cfg.rule())

  def decode(self, cfg: AtlasConfig, inputs: list[MemoryInputs], gates: dict,
             carry: chunked.MemoryCarry, pos: jax.Array
             ) -> tuple[jax.Array, chunked.MemoryCarry]:
    (inp,) = inputs
    targets, rule_gates = self._rule_inputs(cfg, inp, gates)
    o, carry = chunked.decode_step(
        cfg.memory, carry, inp.q, inp.k, targets, chunk_size=cfg.chunk_size, rule=cfg.rule(),
        feature_map=lambda x, side: self._features(cfg, x, side), **rule_gates)
    return (inp.q + o if cfg.residual else o), carry


class AtlasMixer(MemoryMixer):
  """ATLAS-family token mixer: [B, L, D] -> [B, L, D], with prefill/decode."""

  def __init__(self, d_model: int, cfg: AtlasConfig, *, rngs: nnx.Rngs):
    h, k = family_heads(cfg, AtlasConfig, d_model)
    self.cfg, self.d_model = cfg, d_model
    n_gamma = cfg.omega_window if cfg.gamma_mode == "window" else 1
    self.project = Projection(d_model, cfg, rngs=rngs,
                              extra_gates=(("gamma", n_gamma, cfg.gamma_bias_init),))
    self.memory = OmegaMemory(cfg, h, k, rngs=rngs)
    self.read_out = ReadOut(d_model, cfg, rngs=rngs)
