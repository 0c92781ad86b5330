"""The one memory mixer: x [B, L, D] -> projection -> memory -> read-out -> [B, L, D].

Titans, TTT, TNT and ATLAS are this class with different pieces:

  Projection  q/k/v linear maps (q and k may share one), causal depthwise convs with a decode
              cache, activation, per-head L2 normalization, optional RoPE, and one gate map
              producing the inner learning rate and the optional momentum / forget gates
              (plus family gates such as ATLAS's window gates) as `MemoryInputs`.
  memory      the family's memory over those inputs, with its learned initial state:
              `ChunkedMemory` (Titans, TTT: `tnx.memory.chunked`), the TNT global + local
              memories (`tnx.tnt.layer`), the Omega-rule memory (`tnx.memory.atlas.mixers`).
              Interface: memory(cfg, inputs, gates, with_carry) -> (o [B, H, L, K], carry),
              memory.init_carry(cfg, batch), memory.decode(cfg, inputs, gates, carry, pos).
  ReadOut     per-head RMSNorm (or LayerNorm over the merged heads), an optional gate by the
              token, the output projection.

Decoding keeps {"memory": carry, "conv": conv caches, "pos": tokens seen [B]}: constant size
in the sequence length. Every piece reads run-time settings (chunk sizes) from the `cfg`
passed at call time, so changing `mixer.cfg` (e.g. `set_chunk_sizes`) needs no rebuild.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tnx import validation
from tnx.memory import chunked
from tnx.memory import model as mm
from tnx.memory.inputs import MemoryInputs, at_step
from tnx.memory.mixer_config import MemoryLayerConfig
from tnx.nn import conv as conv_lib
from tnx.nn import layers as nnl

Gates = dict[str, jax.Array]
_MEMORY_GATES = ("lr", "log_mom_decay", "log_retention")


def _linear(din: int, dout: int, cfg: MemoryLayerConfig, rngs: nnx.Rngs,
            bias: bool = False) -> nnx.Linear:
  return nnx.Linear(din, dout, use_bias=bias, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                    rngs=rngs)


class Projection(nnx.Module):
  """x [B, L, D] -> one `MemoryInputs` per memory, the extra gates, and the conv cache.

  Args:
    d_model, cfg: the width and the shared config (heads, conv width, activation, gates).
    num_memories: memories fed by this projection (TNT: global + locals).
    num_streams: independent q/k/v projections (1 = every memory reads the same q/k/v).
    num_gate_sets: independent gate groups (1 = every memory uses the same gates).
    shared_qk: q and k come from one projection (then separate convs; TTT).
    conv_v: v also goes through a causal conv (TTT: no).
    extra_gates: ((name, width per head, initial bias), ...) further sigmoid gates, returned
      as values [B, H, L, width]; only with one gate set.
  """

  def __init__(self, d_model: int, cfg: MemoryLayerConfig, *, rngs: nnx.Rngs,
               num_memories: int = 1, num_streams: int = 1, num_gate_sets: int = 1,
               shared_qk: bool = False, conv_v: bool = True,
               extra_gates: tuple[tuple[str, int, float], ...] = ()):
    h, k = cfg.heads(d_model)
    for name, n in (("num_streams", num_streams), ("num_gate_sets", num_gate_sets)):
      if n not in (1, num_memories):
        raise ValueError(f"{name} must be 1 or num_memories={num_memories}, got {n}")
    if extra_gates and num_gate_sets != 1:
      raise ValueError("extra_gates need a single gate set")
    self.num_heads, self.head_dim, self.num_memories = h, k, num_memories
    self.num_streams, self.num_gate_sets = num_streams, num_gate_sets
    width = num_streams * h * k
    self.q_proj = _linear(d_model, width, cfg, rngs)
    self.k_proj = None if shared_qk else _linear(d_model, width, cfg, rngs)
    self.v_proj = _linear(d_model, width, cfg, rngs)
    n_convs = (3 if conv_v else 2) if cfg.conv_width else 0
    self.convs = nnx.List([conv_lib.CausalDepthwiseConv(width, cfg.conv_width, rngs=rngs,
                                                        param_dtype=cfg.param_dtype)
                           for _ in range(n_convs)]) if n_convs else None
    groups = [("lr", 1, cfg.lr_bias_init)]
    groups += [("log_mom_decay", 1, cfg.momentum_bias_init)] if cfg.momentum else []
    groups += [("log_retention", 1, cfg.forget_bias_init)] if cfg.forget else []
    self.gate_groups = tuple((name, w) for name, w, _ in groups + list(extra_gates))
    bias = jnp.concatenate([jnp.full((num_gate_sets * h * w,), b)
                            for _, w, b in groups + list(extra_gates)])
    self.gate_proj = _linear(d_model, bias.shape[0], cfg, rngs, bias=True)
    self.gate_proj.bias = nnx.Param(bias.astype(cfg.param_dtype))

  def _conv_input(self, xf: jax.Array) -> list[jax.Array]:
    q = self.q_proj(xf)
    return [q, q if self.k_proj is None else self.k_proj(xf), self.v_proj(xf)]

  def init_conv_cache(self, batch: int, dtype: Any) -> list[jax.Array] | None:
    """The conv caches before the first token."""
    if self.convs is None:
      return None
    width = self.num_streams * self.num_heads * self.head_dim
    return [c.init_cache(batch, width, dtype) for c in self.convs]

  def __call__(self, cfg: MemoryLayerConfig, x_BxLxD: jax.Array, *, conv_cache: Any = None,
               positions: jax.Array | None = None
               ) -> tuple[list[MemoryInputs], Gates, list[jax.Array] | None]:
    """A whole sequence (conv_cache None; positions default to 0..L-1), or one decode step
    (x [B, 1, D], the conv caches, positions [B, 1]). Returns (inputs per memory, extra
    gates, conv caches after the last token)."""
    h = self.num_heads
    xf = x_BxLxD.astype(cfg.dtype)
    streams = self._conv_input(xf)
    new_cache = None
    if self.convs is not None:
      n = len(self.convs)
      if conv_cache is None:
        new_cache = [c.cache_from(r) for c, r in zip(self.convs, streams)]
        streams[:n] = [c(r) for c, r in zip(self.convs, streams)]
      else:
        steps = [c.step(r[:, 0], cc) for c, r, cc in zip(self.convs, streams, conv_cache)]
        streams[:n] = [y[:, None] for y, _ in steps]
        new_cache = [cc for _, cc in steps]
    act = jax.nn.silu if cfg.qkv_activation == "silu" else (lambda a: a)
    q, kk, v = ([nnl.split_heads(part, h) for part in jnp.split(act(r), self.num_streams, -1)]
                for r in streams)
    if cfg.qk_l2_norm:
      q, kk = [nnl.l2_normalize(a) for a in q], [nnl.l2_normalize(a) for a in kk]
    period = cfg.rope_period()
    if period:
      if positions is None:
        positions = jnp.arange(x_BxLxD.shape[1])
      q = [nnl.rope(a, positions % period, seq_axis=2) for a in q]
      kk = [nnl.rope(a, positions % period, seq_axis=2) for a in kk]
    gates = self._gates(cfg, self.gate_proj(xf).transpose(0, 2, 1))
    inputs = []
    for j in range(self.num_memories):
      a, g = (0 if self.num_streams == 1 else j), (0 if self.num_gate_sets == 1 else j)
      pick = lambda name: gates[name][:, g] if name in gates else None
      lr = cfg.memory_lr_scale(j, self.head_dim) * gates["lr"][:, g]
      inputs.append(MemoryInputs(q[a], kk[a], v[a], lr, pick("log_mom_decay"),
                                 pick("log_retention")))
    extra = {n: gates[n][:, 0] for n, _ in self.gate_groups if n not in _MEMORY_GATES}
    return inputs, extra, new_cache

  def _gates(self, cfg: MemoryLayerConfig, logits_BxGxL: jax.Array) -> Gates:
    """Gates per group from their logits z: lr = sigmoid(z) (each memory's bound
    `cfg.memory_lr_scale` is applied by the caller), log_mom_decay =
    log_sigmoid(z), log_retention = log(1 - sigmoid(z)) = log_sigmoid(-z) (finite for every
    finite z), [B, sets, H, L]; extra gates sigmoid(z) [B, sets, H, L, width]."""
    b, _, length = logits_BxGxL.shape
    out, start = {}, 0
    for name, w in self.gate_groups:
      size = self.num_gate_sets * self.num_heads * w
      z = logits_BxGxL[:, start:start + size].reshape(b, self.num_gate_sets, self.num_heads,
                                                      w, length).transpose(0, 1, 2, 4, 3)
      start += size
      if name == "lr":
        out[name] = jax.nn.sigmoid(z[..., 0])
      elif name == "log_mom_decay":
        out[name] = jax.nn.log_sigmoid(z[..., 0])
      elif name == "log_retention":
        out[name] = jax.nn.log_sigmoid(-z[..., 0])
      else:
        out[name] = jax.nn.sigmoid(z)
    return out


class ReadOut(nnx.Module):
  """o [B, H, L, K] -> y [B, L, D]: norm ("head": RMSNorm per head; "layer": LayerNorm over
  the merged heads), the gate act(x W_g) when `cfg.output_gate` (act "sigmoid" or "gelu"),
  output projection."""

  def __init__(self, d_model: int, cfg: MemoryLayerConfig, *, rngs: nnx.Rngs,
               norm: str = "head", gate: str = "sigmoid"):
    h, k = cfg.heads(d_model)
    gate = gate if cfg.output_gate else None
    self.norm_kind, self.gate_kind, self.dtype = norm, gate, cfg.dtype
    if norm == "head":
      self.norm = nnl.HeadNorm(h, k, param_dtype=cfg.param_dtype)
    else:
      self.norm = nnx.LayerNorm(h * k, dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
    self.gate = None if gate is None else _linear(d_model, h * k, cfg, rngs)
    self.proj = _linear(h * k, d_model, cfg, rngs)

  def __call__(self, x_BxLxD: jax.Array, o_BxHxLxK: jax.Array) -> jax.Array:
    if self.norm_kind == "head":
      y = nnl.merge_heads(self.norm(o_BxHxLxK))
    else:
      y = self.norm(nnl.merge_heads(o_BxHxLxK))
    if self.gate is not None:
      act = jax.nn.sigmoid if self.gate_kind == "sigmoid" else jax.nn.gelu
      y = y * act(self.gate(x_BxLxD.astype(self.dtype)))
    return self.proj(y).astype(x_BxLxD.dtype)


# -- initial states ----------------------------------------------------------------------
def state_variables(state: mm.State, learn: bool) -> nnx.List:
  """A memory state (tuple of {name: [H, ...]}) as parameters (learn) or fixed variables."""
  kind = nnx.Param if learn else nnx.Variable
  return nnx.List([nnx.Dict({n: kind(x) for n, x in layer.items()}) for layer in state])


def read_state(var: nnx.List, dtype: Any) -> mm.State:
  return tuple({n: v[...].astype(dtype) for n, v in layer.items()} for layer in var)


def ln_variables(head_dim: int, num_heads: int, dtype: Any) -> nnx.Dict:
  """Outer LN parameters of an LN-residual memory network."""
  return nnx.Dict({n: nnx.Param(x) for n, x in mm.init_ln(head_dim, num_heads, dtype).items()})


def read_ln(var: nnx.Dict | None, dtype: Any) -> dict[str, jax.Array] | None:
  return None if var is None else {n: v[...].astype(dtype) for n, v in var.items()}


class ChunkedMemory(nnx.Module):
  """One memory on the chunked primitive (`tnx.memory.chunked`) with a learned initial state
  W_0 (and the outer LN parameters of an LN-residual memory network). `cfg` must provide
  memory, chunk_size, retrieval, inner_loss, remat_group, momentum, dtype."""

  def __init__(self, cfg: Any, num_heads: int, head_dim: int, *, rngs: nnx.Rngs):
    state = mm.init_state(cfg.memory, rngs.params(), head_dim, num_heads, cfg.param_dtype)
    self.init_state = state_variables(state, cfg.learn_init)
    self.ln = (ln_variables(head_dim, num_heads, cfg.param_dtype) if cfg.memory.ln_residual
               else None)

  @staticmethod
  def _rule(cfg: Any) -> chunked.UpdateRule:
    """Gradient descent, or Titans' momentum with lr inside (`cfg.momentum`)."""
    return chunked.UpdateRule(optimizer="momentum" if cfg.momentum else "gd",
                              inner_loss=cfg.inner_loss, retrieval=cfg.retrieval)

  def _common(self, cfg: Any) -> dict[str, Any]:
    return dict(chunk_size=cfg.chunk_size, rule=self._rule(cfg), ln=read_ln(self.ln, cfg.dtype))

  def __call__(self, cfg: Any, inputs: list[MemoryInputs], gates: Gates, *,
               with_carry: bool = False) -> tuple[jax.Array, chunked.MemoryCarry]:
    (inp,) = inputs
    return chunked.chunked_memory(
        cfg.memory, read_state(self.init_state, cfg.dtype), inp.q, inp.k, inp.v, inp.lr,
        log_mom_decay=inp.log_mom_decay, log_retention=inp.log_retention,
        remat_group=cfg.remat_group, **self._common(cfg))

  def init_carry(self, cfg: Any, batch: int) -> chunked.MemoryCarry:
    return chunked.init_carry(read_state(self.init_state, cfg.dtype), batch, self._rule(cfg))

  def decode(self, cfg: Any, inputs: list[MemoryInputs], gates: Gates,
             carry: chunked.MemoryCarry, pos: jax.Array) -> tuple[jax.Array, Any]:
    (inp,) = inputs
    return chunked.decode_step(cfg.memory, carry, inp.q, inp.k, inp.v, inp.lr,
                               log_mom_decay=inp.log_mom_decay,
                               log_retention=inp.log_retention, **self._common(cfg))


def family_heads(cfg: Any, cls: type, d_model: int) -> tuple[int, int]:
  """Checks that `cfg` is a `cls` and returns its (H, K) at width d_model."""
  if not isinstance(cfg, cls):
    raise ValueError(f"cfg must be a {cls.__name__}, got {type(cfg).__name__}")
  return cfg.heads(d_model)


class MemoryMixer(nnx.Module):
  """A memory token mixer [B, L, D] -> [B, L, D] with prefill and one-token decode.

  Families set `cfg`, `d_model`, `project` (Projection), `memory` (see the module docstring)
  and `read_out` (ReadOut) in their constructor; the forward paths below are shared.
  """

  cfg: Any
  d_model: int
  project: Projection
  memory: Any
  read_out: ReadOut

  def _check(self, name: str, x: jax.Array, ndim: int) -> None:
    """Shape (static, also under jit) and finiteness (concrete arrays only: under jit a
    non-finite token propagates NaN to the outputs that depend on it, never earlier ones)."""
    want = "[B, L, D]" if ndim == 3 else "[B, D]"
    if x.ndim != ndim or x.shape[-1] != self.d_model:
      raise ValueError(f"{name} must be {want} with D={self.d_model}, got shape "
                       f"{tuple(x.shape)}")
    if 0 in x.shape[:-1]:
      raise ValueError(f"{name} must be {want} with B >= 1 and L >= 1, got shape "
                       f"{tuple(x.shape)}")
    validation.finite_array(name, x)

  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    """Parallel (chunked) forward: [B, L, D] -> [B, L, D]."""
    self._check("x_BxLxD", x_BxLxD, 3)
    inputs, gates, _ = self.project(self.cfg, x_BxLxD)
    o_BxHxLxK, _ = self.memory(self.cfg, inputs, gates)
    return self.read_out(x_BxLxD, o_BxHxLxK)

  def prefill(self, x_BxLxD: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
    """Parallel forward that also returns the decode cache after the last token."""
    self._check("x_BxLxD", x_BxLxD, 3)
    inputs, gates, conv = self.project(self.cfg, x_BxLxD)
    o_BxHxLxK, carry = self.memory(self.cfg, inputs, gates, with_carry=True)
    b, length = x_BxLxD.shape[:2]
    cache = {"memory": carry, "conv": conv, "pos": jnp.full((b,), length, jnp.int32)}
    return self.read_out(x_BxLxD, o_BxHxLxK), cache

  def init_cache(self, batch: int) -> dict[str, Any]:
    """The decode cache before the first token."""
    return {"memory": self.memory.init_carry(self.cfg, batch),
            "conv": self.project.init_conv_cache(batch, self.cfg.dtype),
            "pos": jnp.zeros((batch,), jnp.int32)}

  def decode(self, x_BxD: jax.Array, cache: dict[str, Any]) -> tuple[jax.Array, dict[str, Any]]:
    """One token per sequence: [B, D] -> [B, D] with the chunk semantics of the forward."""
    self._check("x_BxD", x_BxD, 2)
    pos_B = cache["pos"]
    inputs, gates, conv = self.project(self.cfg, x_BxD[:, None], conv_cache=cache["conv"],
                                       positions=pos_B[:, None])
    inputs = [at_step(inp) for inp in inputs]
    gates = {n: g[:, :, 0] for n, g in gates.items()}
    o_BxHxK, carry = self.memory.decode(self.cfg, inputs, gates, cache["memory"], pos_B)
    y = self.read_out(x_BxD[:, None], o_BxHxK[:, :, None])[:, 0]
    return y, {"memory": carry, "conv": conv, "pos": pos_B + 1}


def replace_configs(model: nnx.Module, update: Callable[[Any], Any]) -> int:
  """Sets `m.cfg = update(m.cfg)` in place for every memory mixer m inside `model` for which
  `update` returns a config (None leaves it). Returns how many changed. The parameters never
  depend on chunk sizes, so this is how inference / stage-2 chunk sizes are set; re-split
  the model afterwards (the config lives in the graph definition)."""
  changed = 0
  for _, module in nnx.iter_modules(model):
    if isinstance(module, MemoryMixer):
      new = update(module.cfg)
      if new is not None:
        module.cfg = new
        changed += 1
  return changed
