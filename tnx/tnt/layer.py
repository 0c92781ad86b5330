"""TNT token mixer (NNX): projections and gates around the pure TNT memory math.

x [B, L, D] -> q/k/v = SiLU(causal depthwise conv(x W_{q,k,v})), q and k L2-normalized per head
(as in the Titans layer), per-memory inner learning rates lr = lr_max * sigmoid(x w_lr) (and
optional momentum / forget gates) -> global + local memories (`tnx.tnt.branches`) -> per-head
RMS norm of the combined read, sigmoid output gate, output projection.

With a mesh whose `cfg.context_axis` has size > 1 (passed as `mesh=` or active through
`jax.set_mesh`), the memory math runs sequence-sharded through `tnx.tnt.context_parallel`; the
projections stay outside the shard_map, where jit's sharding propagation handles the causal
convolution across block boundaries. Prefill and decode always use the single-device math.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tnx import validation
from tnx.memory import chunked
from tnx.memory import model as mm
from tnx.nn import conv
from tnx.nn import layers as nnl
from tnx.tnt import branches, context_parallel
from tnx.tnt import qk_projection as qkp
from tnx.tnt.config import TNTConfig


def _state_vars(state: mm.State, learn: bool) -> nnx.List:
  kind = nnx.Param if learn else nnx.Variable
  return nnx.List([nnx.Dict({n: kind(x) for n, x in layer.items()}) for layer in state])


def _read_state(var: nnx.List, dtype: Any) -> mm.State:
  return tuple({n: v[...].astype(dtype) for n, v in layer.items()} for layer in var)


def _where_batch(mask_B: jax.Array, a: Any, b: Any) -> Any:
  def pick(x, y):
    return jnp.where(mask_B.reshape(mask_B.shape + (1,) * (x.ndim - 1)), x, y)
  return jax.tree.map(pick, a, b)


class TNTMemory(nnx.Module):
  """Hierarchical global/local test-time memory: [B, L, D] -> [B, L, D]."""

  def __init__(self, d_model: int, cfg: TNTConfig, *, rngs: nnx.Rngs, mesh: Any = None):
    d_model = validation.positive_int("d_model", d_model)
    if not isinstance(cfg, TNTConfig):
      raise ValueError(f"cfg must be a TNTConfig, got {type(cfg).__name__}")
    self.cfg = cfg
    self.mesh = mesh
    self.num_heads = h = cfg.num_heads
    self.head_dim = cfg.head_dim or d_model // h
    if self.head_dim < 1:
      raise ValueError(f"head_dim must be >= 1; d_model={d_model}, num_heads={h}")
    hk = h * self.head_dim
    n_qkv = 1 if cfg.share_qkv else cfg.num_memories
    lin = lambda i, o, bias=False: nnx.Linear(i, o, use_bias=bias, dtype=cfg.dtype,
                                               param_dtype=cfg.param_dtype, rngs=rngs)
    self.q_proj, self.k_proj, self.v_proj = (lin(d_model, n_qkv * hk) for _ in range(3))
    self.convs = nnx.List([conv.CausalDepthwiseConv(n_qkv * hk, cfg.conv_width, rngs=rngs,
                                                      param_dtype=cfg.param_dtype)
                           for _ in range(3)]) if cfg.conv_width else None
    n_lr = 1 if cfg.share_lr else cfg.num_memories
    inits = [cfg.lr_bias_init] + [cfg.mom_bias_init] * cfg.momentum
    inits += [cfg.forget_bias_init] * cfg.forget
    self.gate_proj = lin(d_model, len(inits) * n_lr * h, bias=True)
    self.gate_proj.bias = nnx.Param(jnp.concatenate(
        [jnp.full((n_lr * h,), b) for b in inits]).astype(cfg.param_dtype))
    self.out_norm = nnl.HeadNorm(h, self.head_dim, param_dtype=cfg.param_dtype)
    self.out_gate = lin(d_model, hk) if cfg.output_gate else None
    self.o_proj = lin(hk, d_model)
    new_state = lambda: mm.init_state(cfg.memory, rngs.params(), self.head_dim, h,
                                      cfg.param_dtype)
    self.global_init = (_state_vars(new_state(), cfg.learn_global_init) if cfg.use_global
                        else None)
    self.local_init = nnx.List([_state_vars(new_state(), cfg.learn_local_init)
                                for _ in range(cfg.num_locals)])
    new_ln = lambda: nnx.Dict({n: nnx.Param(x) for n, x in
                               mm.init_ln(self.head_dim, h, cfg.param_dtype).items()})
    ln = cfg.memory.ln_residual
    self.global_ln = new_ln() if ln and cfg.use_global else None
    self.local_ln = nnx.List([new_ln() for _ in range(cfg.num_locals)]) if ln else None
    self.combine_weights = (nnx.Param(jnp.ones((cfg.num_memories, h), cfg.param_dtype))
                            if cfg.combine == "weighted" else None)

  # -- parameters and projections ------------------------------------------------------
  def memory_params(self) -> branches.MemoryParams:
    """Outer parameters of the memory math, cast to the compute dtype."""
    dt = self.cfg.dtype
    read_ln = lambda d: None if d is None else {n: v[...].astype(dt) for n, v in d.items()}
    lns = ([read_ln(self.global_ln)] if self.cfg.use_global else [])
    lns += [read_ln(None if self.local_ln is None else self.local_ln[i])
            for i in range(self.cfg.num_locals)]
    return branches.MemoryParams(
        None if self.global_init is None else _read_state(self.global_init, dt),
        tuple(_read_state(s, dt) for s in self.local_init), tuple(lns),
        None if self.combine_weights is None else self.combine_weights[...].astype(dt))

  def _project(self, x: jax.Array, conv_caches: Any = None
               ) -> tuple[list[branches.BranchInputs], Any]:
    """x [B, L, D] -> one BranchInputs per memory (global first), new conv caches."""
    cfg, h = self.cfg, self.num_heads
    xf = x.astype(cfg.dtype)
    raw = [self.q_proj(xf), self.k_proj(xf), self.v_proj(xf)]
    new_caches = None
    if self.convs is not None:
      if conv_caches is None:
        raw = [conv(r) for conv, r in zip(self.convs, raw)]
      else:
        outs = [conv.step(r[:, 0], c) for conv, r, c in zip(self.convs, raw, conv_caches)]
        raw = [o[:, None] for o, _ in outs]
        new_caches = [c for _, c in outs]
    n_qkv = 1 if cfg.share_qkv else cfg.num_memories
    q, k, v = (jnp.split(jax.nn.silu(r), n_qkv, axis=-1) for r in raw)
    q = [nnl.l2_normalize(nnl.split_heads(a, h)) for a in q]
    k = [nnl.l2_normalize(nnl.split_heads(a, h)) for a in k]
    v = [nnl.split_heads(a, h) for a in v]
    logits = self.gate_proj(xf).transpose(0, 2, 1)  # [B, G * n_lr * H, L]
    n_lr = 1 if cfg.share_lr else cfg.num_memories
    groups = logits.reshape((logits.shape[0], -1, n_lr, h, logits.shape[-1]))
    lr = cfg.lr_max * jax.nn.sigmoid(groups[:, 0])
    mom = jax.nn.sigmoid(groups[:, 1]) if cfg.momentum else None
    fgt = jax.nn.sigmoid(groups[:, 1 + cfg.momentum]) if cfg.forget else None
    out = []
    for j in range(cfg.num_memories):
      a, g = (0 if cfg.share_qkv else j), (0 if cfg.share_lr else j)
      out.append(branches.BranchInputs(q[a], k[a], v[a], lr[:, g],
                                       None if mom is None else mom[:, g],
                                       None if fgt is None else fgt[:, g]))
    return out, new_caches

  def _output(self, x: jax.Array, o: jax.Array) -> jax.Array:
    y = nnl.merge_heads(self.out_norm(o))
    if self.out_gate is not None:
      y = y * jax.nn.sigmoid(self.out_gate(x.astype(self.cfg.dtype)))
    return self.o_proj(y).astype(x.dtype)

  def context_mesh(self) -> Any:
    """The mesh used for context parallelism, or None for the single-device path."""
    mesh = self.mesh if self.mesh is not None else jax.sharding.get_abstract_mesh()
    if context_parallel.context_size(mesh, self.cfg.context_axis) > 1:
      return mesh
    return None

  # -- forward paths -------------------------------------------------------------------
  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    """Parallel forward: [B, L, D] -> [B, L, D]."""
    inputs, _ = self._project(x_BxLxD)
    mesh = self.context_mesh()
    if mesh is not None:
      o = context_parallel.tnt_mix_context_parallel(self.cfg, self.memory_params(), inputs, mesh)
    else:
      o = branches.tnt_mix(self.cfg, self.memory_params(), inputs)
    return self._output(x_BxLxD, o)

  def prefill(self, x_BxLxD: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
    """Parallel forward that also returns the decode cache after the last token."""
    cfg = self.cfg
    inputs, _ = self._project(x_BxLxD)
    o, (g_carry, l_carries) = branches.tnt_mix(cfg, self.memory_params(), inputs,
                                               return_carries=True)
    length = x_BxLxD.shape[1]
    qk = []
    for i, (c, s) in enumerate(zip(cfg.local_chunk_sizes, cfg.shard_lengths)):
      scope = s if cfg.qk_scope == "shard" else c
      qk.append(qkp.qk_carry(inputs[int(cfg.use_global) + i].k, (length // scope) * scope))
    conv = None
    if self.convs is not None:
      xf = x_BxLxD.astype(cfg.dtype)
      raw = [self.q_proj(xf), self.k_proj(xf), self.v_proj(xf)]
      conv = [cv.cache_from(r) for cv, r in zip(self.convs, raw)]
    cache = {"global": g_carry, "local": l_carries, "qk": qk, "conv": conv,
             "pos": jnp.full((x_BxLxD.shape[0],), length, jnp.int32)}
    return self._output(x_BxLxD, o), cache

  def init_cache(self, batch: int) -> dict[str, Any]:
    """Decode cache before the first token (constant size in the sequence length)."""
    cfg, prm = self.cfg, self.memory_params()
    carry = lambda s: chunked.init_carry(s, batch, momentum=cfg.momentum)
    k = self.head_dim
    qk = [(jnp.zeros((batch, self.num_heads, k, k), cfg.dtype), jnp.zeros((batch,), jnp.int32))
          for _ in range(cfg.num_locals)]
    n = (1 if cfg.share_qkv else cfg.num_memories) * self.num_heads * k
    conv = None if self.convs is None else [c.init_cache(batch, n, cfg.dtype)
                                            for c in self.convs]
    return {"global": carry(prm.global_init) if cfg.use_global else None,
            "local": [carry(s) for s in prm.local_inits], "qk": qk, "conv": conv,
            "pos": jnp.zeros((batch,), jnp.int32)}

  def decode(self, x_BxD: jax.Array, cache: dict[str, Any]
             ) -> tuple[jax.Array, dict[str, Any]]:
    """One token per sequence: [B, D] -> [B, D]. Local memories reset at shard starts and
    use the current `cfg.local_chunk_sizes` (1 = exact per-token GD); the global memory
    updates its read state at multiples of C_G."""
    cfg, prm = self.cfg, self.memory_params()
    inputs, conv = self._project(x_BxD[:, None], cache["conv"])
    sq = lambda a: None if a is None else a[:, :, 0]
    inputs = [branches.BranchInputs(*(sq(a) for a in inp)) for inp in inputs]
    pos, batch = cache["pos"], x_BxD.shape[0]
    common = dict(inner_loss=cfg.inner_loss)
    reads, g_carry, l_carries, qk = [], None, [], []
    if cfg.use_global:
      g = inputs[0]
      o, g_carry = chunked.decode_step(
          cfg.memory, cache["global"], g.q, g.k, g.v, g.lr, chunk_size=cfg.global_chunk_size,
          mom_decay=g.mom_decay, forget=g.forget, retrieval=cfg.global_retrieval,
          ln=prm.lns[0], **common)
      reads.append(o)
    for i, (c, s) in enumerate(zip(cfg.local_chunk_sizes, cfg.shard_lengths)):
      j = int(cfg.use_global) + i
      inp = inputs[j]
      reset = pos % s == 0
      fresh = chunked.init_carry(prm.local_inits[i], batch, momentum=cfg.momentum)
      carry = _where_batch(reset, fresh, cache["local"][i])
      q = inp.q
      m, count = cache["qk"][i]
      if cfg.qk_projection:
        reset_qk = reset if cfg.qk_scope == "shard" else pos % c == 0
        q, m, count = qkp.qk_decode(m, count, inp.q, inp.k, reset_qk, rescale=cfg.qk_rescale)
      o, carry = chunked.decode_step(
          cfg.memory, carry, q, inp.k, inp.v, inp.lr, chunk_size=c, mom_decay=inp.mom_decay,
          forget=inp.forget, retrieval="intra_chunk", ln=prm.lns[j], **common)
      reads.append(o)
      l_carries.append(carry)
      qk.append((m, count))
    out = branches.combine(cfg, [r[:, :, None] for r in reads], prm.weights)
    y = self._output(x_BxD[:, None], out)[:, 0]
    return y, {"global": g_carry, "local": l_carries, "qk": qk, "conv": conv, "pos": pos + 1}
