"""TNT token mixer: the memory mixer (`tnx.memory.mixer`) around the TNT memory math.

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

from tnx.memory import chunked
from tnx.memory import model as mm
from tnx.memory.inputs import MemoryInputs
from tnx.memory.mixer import (
    MemoryMixer,
    Projection,
    ReadOut,
    family_heads,
    ln_variables,
    read_ln,
    read_state,
    state_variables,
)
from tnx.tnt import branches, context_parallel
from tnx.tnt import qk_projection as qkp
from tnx.tnt.config import TNTConfig


def _where_batch(mask_B: jax.Array, a: Any, b: Any) -> Any:
  def pick(x, y):
    return jnp.where(mask_B.reshape(mask_B.shape + (1,) * (x.ndim - 1)), x, y)
  return jax.tree.map(pick, a, b)


class TNTMemories(nnx.Module):
  """The global memory (V_0, never reset) and the local memories (W_init, reset every S_L
  tokens), their LN parameters and combination weights; the memory piece of `TNTMemory`.

  The carry is {"global": MemoryCarry | None, "local": [MemoryCarry], "qk": [(M, count)]}."""

  def __init__(self, cfg: TNTConfig, num_heads: int, head_dim: int, *, rngs: nnx.Rngs,
               mesh: Any = None):
    self.mesh = mesh
    self.num_heads, self.head_dim = num_heads, head_dim
    new_state = lambda: mm.init_state(cfg.memory, rngs.params(), head_dim, num_heads,
                                      cfg.param_dtype)
    self.global_init = (state_variables(new_state(), cfg.learn_global_init) if cfg.use_global
                        else None)
    self.local_init = nnx.List([state_variables(new_state(), cfg.learn_init)
                                for _ in range(cfg.num_locals)])
    ln = cfg.memory.ln_residual
    new_ln = lambda: ln_variables(head_dim, num_heads, cfg.param_dtype)
    self.global_ln = new_ln() if ln and cfg.use_global else None
    self.local_ln = nnx.List([new_ln() for _ in range(cfg.num_locals)]) if ln else None
    self.combine_weights = (nnx.Param(jnp.ones((cfg.num_memories, num_heads), cfg.param_dtype))
                            if cfg.combine == "weighted" else None)

  def params(self, cfg: TNTConfig) -> branches.MemoryParams:
    """Outer parameters of the memory math, cast to the compute dtype."""
    dt = cfg.dtype
    lns = [read_ln(self.global_ln, dt)] if cfg.use_global else []
    lns += [read_ln(None if self.local_ln is None else self.local_ln[i], dt)
            for i in range(cfg.num_locals)]
    return branches.MemoryParams(
        None if self.global_init is None else read_state(self.global_init, dt),
        tuple(read_state(s, dt) for s in self.local_init), tuple(lns),
        None if self.combine_weights is None else self.combine_weights[...].astype(dt))

  def context_mesh(self, cfg: TNTConfig) -> Any:
    """The mesh used for context parallelism, or None for the single-device path."""
    mesh = self.mesh if self.mesh is not None else jax.sharding.get_abstract_mesh()
    if context_parallel.context_size(mesh, cfg.context_axis) > 1:
      return mesh
    return None

  def __call__(self, cfg: TNTConfig, inputs: list[MemoryInputs], gates: dict, *,
               with_carry: bool = False) -> tuple[jax.Array, Any]:
    """Reads [B, H, L, K] (and, with_carry, the decode carry after the last token)."""
    if not with_carry:
      mesh = self.context_mesh(cfg)
      if mesh is not None:
        return context_parallel.tnt_mix_context_parallel(cfg, self.params(cfg), inputs,
                                                         mesh), None
      return branches.tnt_mix(cfg, self.params(cfg), inputs), None
    o, (g_carry, l_carries) = branches.tnt_mix(cfg, self.params(cfg), inputs,
                                               return_carries=True)
    length = inputs[0].q.shape[2]
    qk = []
    for i, (c, s) in enumerate(zip(cfg.local_chunk_sizes, cfg.shard_lengths)):
      scope = s if cfg.qk_scope == "shard" else c
      qk.append(qkp.qk_carry(inputs[int(cfg.use_global) + i].k, (length // scope) * scope))
    return o, {"global": g_carry, "local": l_carries, "qk": qk}

  def init_carry(self, cfg: TNTConfig, batch: int) -> dict[str, Any]:
    prm = self.params(cfg)
    carry = lambda s: chunked.init_carry(s, batch, branches.memory_rule(cfg))
    k = self.head_dim
    qk = [(jnp.zeros((batch, self.num_heads, k, k), cfg.dtype), jnp.zeros((batch,), jnp.int32))
          for _ in range(cfg.num_locals)]
    return {"global": carry(prm.global_init) if cfg.use_global else None,
            "local": [carry(s) for s in prm.local_inits], "qk": qk}

  def decode(self, cfg: TNTConfig, inputs: list[MemoryInputs], gates: dict,
             carry: dict[str, Any], pos_B: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
    """One token: local memories reset at shard starts and use the current
    `cfg.local_chunk_sizes` (1 = exact per-token GD); the global memory updates its read
    state at multiples of C_G."""
    prm = self.params(cfg)
    batch = pos_B.shape[0]
    reads, g_carry, l_carries, qk = [], None, [], []
    if cfg.use_global:
      g = inputs[0]
      o, g_carry = chunked.decode_step(
          cfg.memory, carry["global"], g.q, g.k, g.v, g.lr, chunk_size=cfg.global_chunk_size,
          rule=branches.memory_rule(cfg, cfg.global_retrieval), log_mom_decay=g.log_mom_decay,
          log_retention=g.log_retention, ln=prm.lns[0])
      reads.append(o)
    for i, (c, s) in enumerate(zip(cfg.local_chunk_sizes, cfg.shard_lengths)):
      j = int(cfg.use_global) + i
      inp = inputs[j]
      reset = pos_B % s == 0
      fresh = chunked.init_carry(prm.local_inits[i], batch, branches.memory_rule(cfg))
      local = _where_batch(reset, fresh, carry["local"][i])
      q = inp.q
      m, count = carry["qk"][i]
      if cfg.qk_projection:
        reset_qk = reset if cfg.qk_scope == "shard" else pos_B % c == 0
        q, m, count = qkp.qk_decode(m, count, inp.q, inp.k, reset_qk, rescale=cfg.qk_rescale)
      o, local = chunked.decode_step(
          cfg.memory, local, q, inp.k, inp.v, inp.lr, chunk_size=c,
          rule=branches.memory_rule(cfg), log_mom_decay=inp.log_mom_decay,
          log_retention=inp.log_retention, ln=prm.lns[j])
      reads.append(o)
      l_carries.append(local)
      qk.append((m, count))
    out = branches.combine(cfg, [r[:, :, None] for r in reads], prm.weights)[:, :, 0]
    return out, {"global": g_carry, "local": l_carries, "qk": qk}


class TNTMemory(MemoryMixer):
  """Hierarchical global/local test-time memory: [B, L, D] -> [B, L, D]."""

  def __init__(self, d_model: int, cfg: TNTConfig, *, rngs: nnx.Rngs, mesh: Any = None):
    h, k = family_heads(cfg, TNTConfig, d_model)
    self.cfg, self.d_model = cfg, d_model
    n = cfg.num_memories
    self.project = Projection(d_model, cfg, rngs=rngs, num_memories=n,
                              num_streams=1 if cfg.share_qkv else n,
                              num_gate_sets=1 if cfg.share_lr else n)
    self.read_out = ReadOut(d_model, cfg, rngs=rngs)
    self.memory = TNTMemories(cfg, h, k, rngs=rngs, mesh=mesh)

  @property
  def mesh(self) -> Any:
    """The mesh for context parallelism (None: the one active through jax.set_mesh)."""
    return self.memory.mesh

  @mesh.setter
  def mesh(self, value: Any) -> None:
    self.memory.mesh = value

  def context_mesh(self) -> Any:
    """The mesh used for context parallelism, or None for the single-device path."""
    return self.memory.context_mesh(self.cfg)

  def memory_params(self) -> branches.MemoryParams:
    """Outer parameters of the memory math, cast to the compute dtype."""
    return self.memory.params(self.cfg)
