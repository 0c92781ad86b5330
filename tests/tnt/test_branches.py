"""TNT memory math against slow references: per-token loops, explicit Q-K sums, shard by shard.

Covers the global-only reduction, reset independence, shard folding, causality of the global
chunk-start read, gradient plumbing, and C_L = 1 as exact per-token online GD.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tnx.memory import chunked, reference
from tnx.memory import model as mm
from tnx.memory.inputs import MemoryInputs
from tnx.tnt import branches, qk_projection
from tnx.tnt.config import TNTConfig

B, H, K = 2, 2, 4
MEM = mm.MemoryModelConfig(depth=2, expansion=2)
F64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)


def _cfg(**kw):
  base = dict(num_heads=H, memory=MEM, global_chunk_size=8, local_chunk_sizes=(2,),
              shard_length=8, remat_group=0, **F64)
  base.update(kw)
  return TNTConfig(**base)


def _inputs(length, seed=0, lr_scale=0.1):
  ks = jax.random.split(jax.random.key(seed), 4)
  q, k, v = (jax.random.normal(kk, (B, H, length, K), jnp.float64) for kk in ks[:3])
  k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
  lr = lr_scale * jax.random.uniform(ks[3], (B, H, length), jnp.float64)
  return MemoryInputs(q, k, v, lr)


def _state(seed):
  return mm.init_state(MEM, jax.random.key(seed), K, H, jnp.float64)


def _head(state, h):
  return jax.tree.map(lambda x: x[h], state)


def _local_reference(cfg, state0, inp, chunk, shard):
  """Shard by shard, head by head: explicit M_t q_t, then the per-token loop of tnx.memory."""
  out = np.zeros(inp.q.shape)
  length = inp.q.shape[2]
  for b in range(B):
    for h in range(H):
      for start in range(0, length, shard):
        sl = slice(start, min(start + shard, length))
        q, k = inp.q[b, h, sl], inp.k[b, h, sl]
        if cfg.qk_projection:
          reset = None if cfg.qk_scope == "shard" else chunk
          q = np.stack([
              sum(np.outer(k[s], k[s]) / (k[s] @ k[s] + 1e-6)
                  for s in range((t // reset) * reset if reset else 0, t + 1)) @ q[t]
              for t in range(q.shape[0])])
        o, _ = reference.sequential_reference(cfg.memory, _head(state0, h), jnp.asarray(q), k,
                                              inp.v[b, h, sl], inp.lr[b, h, sl],
                                              chunk_size=chunk)
        out[b, h, sl] = o
  return out


@pytest.mark.parametrize("chunk,scope,length", [(1, "shard", 12), (2, "chunk", 16),
                                                (4, "shard", 13)])
def test_local_branch_matches_per_token_reference(chunk, scope, length):
  """Reset to W_init every S_L tokens, chunk-start base state, Q-K projection; C_L = 1 is
  exact per-token online GD (the stage-2 setting)."""
  cfg = _cfg(local_chunk_sizes=(chunk,), qk_scope=scope)
  inp, w_init = _inputs(length), _state(1)
  got, _ = branches.local_branch(cfg, w_init, inp, chunk_size=chunk, shard_length=8)
  want = _local_reference(cfg, w_init, inp, chunk, 8)
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_global_only_matches_chunk_start_reference():
  """N = 0: the layer's read is the global memory with chunk C_G read at chunk starts."""
  cfg = _cfg(local_chunk_sizes=(), global_chunk_size=4)
  inp, v0 = _inputs(10), _state(2)
  params = branches.MemoryParams(v0, (), (None,), None)
  got = branches.tnt_mix(cfg, params, [inp])
  for b in range(B):
    for h in range(H):
      want, _ = reference.sequential_reference(
          MEM, _head(v0, h), inp.q[b, h], inp.k[b, h], inp.v[b, h], inp.lr[b, h],
          chunk_size=4, rule=chunked.UpdateRule(retrieval="chunk_start"))
      np.testing.assert_allclose(got[b, h], want, rtol=1e-10, atol=1e-12)
  # Causality of the chunk-start read: chunk n's output depends only on tokens < n * C_G, so
  # changing the keys/values from token 4 on leaves chunks 0 and 1 unchanged.
  late = inp._replace(k=inp.k.at[:, :, 4:].set(0.3), v=inp.v.at[:, :, 4:].set(-1.0))
  changed = branches.tnt_mix(cfg, params, [late])
  np.testing.assert_allclose(changed[:, :, :8], got[:, :, :8], rtol=1e-13, atol=1e-14)
  assert float(jnp.abs(changed[:, :, 8:] - got[:, :, 8:]).min()) > 1e-6


def test_reset_independence_and_folding():
  cfg = _cfg(local_chunk_sizes=(2,))
  inp, w_init = _inputs(24), _state(3)
  folded, _ = branches.local_branch(cfg, w_init, inp, chunk_size=2, shard_length=8)
  # Shard folding: every shard run alone from W_init gives identical numbers.
  for m in range(3):
    piece = MemoryInputs(*(a[:, :, 8 * m: 8 * (m + 1)] for a in inp[:4]))
    alone, _ = branches.local_branch(cfg, w_init, piece, chunk_size=2, shard_length=64)
    np.testing.assert_allclose(folded[:, :, 8 * m: 8 * (m + 1)], alone, rtol=1e-14, atol=1e-15)
  # Randomizing the other shards leaves shard 1 unchanged.
  noise = _inputs(24, seed=9)
  mixed = MemoryInputs(*(
      jnp.concatenate([n[:, :, :8], a[:, :, 8:16], n[:, :, 16:]], axis=2)
      for a, n in zip(inp[:4], noise[:4])))
  again, _ = branches.local_branch(cfg, w_init, mixed, chunk_size=2, shard_length=8)
  np.testing.assert_allclose(again[:, :, 8:16], folded[:, :, 8:16], rtol=1e-14, atol=1e-15)
  # fold/unfold are inverse permutations.
  x = jnp.arange(B * H * 24 * K, dtype=jnp.float64).reshape(B, H, 24, K)
  np.testing.assert_array_equal(branches.unfold_shards(branches.fold_shards(x, 8), B), x)


def test_gradient_plumbing():
  """W_init gets gradient from every shard; the local path carries no gradient across shard
  boundaries."""
  cfg = _cfg(local_chunk_sizes=(2,))
  inp, w_init = _inputs(24), _state(4)

  def shard_loss(w, qkvl, m):
    o, _ = branches.local_branch(cfg, w, MemoryInputs(*qkvl), chunk_size=2,
                                 shard_length=8)
    return jnp.sum(jnp.sin(o[:, :, 8 * m: 8 * (m + 1)]))

  grad = jax.jit(jax.grad(shard_loss, argnums=(0, 1)), static_argnums=2)
  for m in range(3):
    g_w, g_in = grad(w_init, tuple(inp[:4]), m)
    assert all(float(jnp.abs(x).max()) > 1e-6 for x in jax.tree.leaves(g_w))
    for g in g_in:
      outside = jnp.concatenate([g[:, :, : 8 * m], g[:, :, 8 * (m + 1):]], axis=2)
      np.testing.assert_array_equal(outside, 0.0)
      assert float(jnp.abs(g[:, :, 8 * m: 8 * (m + 1)]).max()) > 0


def test_combine_rules():
  cfg = _cfg(use_global=True, local_chunk_sizes=(2, 4), global_chunk_size=8)
  inp, states = _inputs(16), [_state(s) for s in (5, 6, 7)]
  params = branches.MemoryParams(states[0], tuple(states[1:]), (None,) * 3, None)
  total = branches.tnt_mix(cfg, params, [inp] * 3)
  g, _ = branches.global_branch(cfg, states[0], inp)
  l1, _ = branches.local_branch(cfg, states[1], inp, chunk_size=2, shard_length=8)
  l2, _ = branches.local_branch(cfg, states[2], inp, chunk_size=4, shard_length=8)
  np.testing.assert_allclose(total, g + l1 + l2, rtol=1e-13)
  mean = branches.tnt_mix(dataclasses.replace(cfg, combine="mean"), params, [inp] * 3)
  np.testing.assert_allclose(mean, (g + l1 + l2) / 3, rtol=1e-13)
  w = jnp.array([[2.0, 0.5], [0.0, 1.0], [1.0, -1.0]])
  weighted = branches.tnt_mix(dataclasses.replace(cfg, combine="weighted"),
                              params._replace(weights=w), [inp] * 3)
  per_head = lambda r, i: r * w[i][None, :, None, None]
  np.testing.assert_allclose(weighted, per_head(g, 0) + per_head(l1, 1) + per_head(l2, 2),
                             rtol=1e-13)


def test_qk_helper_matches_projection_used_by_local_branch():
  cfg = _cfg(qk_rescale="count")
  inp = _inputs(8)
  np.testing.assert_allclose(branches.project_queries(cfg, inp.q, inp.k, 2),
                             qk_projection.qk_project(inp.q, inp.k, rescale="count"),
                             rtol=1e-14)
