"""Bad input to the public API of tnx.tnt: wrong numbers of states or inputs, mismatched
shapes, non-positive chunk and shard lengths, empty sequences, invalid configurations give a
ValueError naming the argument; non-finite values under jit reach only the outputs that depend
on them. Property tests draw values, not shapes (one compilation each)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tnx.memory import model as mm
from tnx.memory.inputs import MemoryInputs
from tnx.tnt import branches, qk_projection, stage2
from tnx.tnt.config import TNTConfig, check_context_lengths

F64 = jnp.float64
B, H, L, K = 1, 2, 8, 4
MEM = mm.MemoryModelConfig(depth=2, expansion=2)
CFG = TNTConfig(num_heads=H, memory=MEM, global_chunk_size=4, local_chunk_sizes=(2,),
                shard_length=4, remat_group=0, dtype=F64, param_dtype=F64)
PROPERTY = settings(max_examples=20, deadline=None, derandomize=True)
NONFINITE = st.sampled_from([np.nan, np.inf, -np.inf])


def _state(seed):
  return mm.init_state(MEM, jax.random.PRNGKey(seed), K, H, F64)


def _inputs(length=L, seed=0):
  ks = jax.random.split(jax.random.PRNGKey(seed), 3)
  unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
  q, k = (unit(jax.random.normal(kk, (B, H, length, K), F64)) for kk in ks[:2])
  return MemoryInputs(q, k, jax.random.normal(ks[2], (B, H, length, K), F64),
                      jnp.full((B, H, length), 0.1, F64))


PARAMS = branches.MemoryParams(_state(0), (_state(1),), (None, None), None)
INPUTS = [_inputs(seed=0), _inputs(seed=1)]


def test_tnt_mix_checks_states_and_inputs_against_the_config():
  """Extra or missing local states, ln entries, a global state where there is no global
  memory (or none where there is), and a wrong number of inputs are ValueErrors."""
  mix = lambda params=PARAMS, inputs=INPUTS, cfg=CFG: branches.tnt_mix(cfg, params, inputs)
  with pytest.raises(ValueError, match=r"params.local_inits must hold one state per local "
                                       r"memory \(1, local_chunk_sizes=\(2,\)\), got 2"):
    mix(PARAMS._replace(local_inits=(_state(1), _state(2))))
  with pytest.raises(ValueError, match="params.local_inits .* got 0"):
    mix(PARAMS._replace(local_inits=()))
  with pytest.raises(ValueError, match="params.lns must hold one entry per memory"):
    mix(PARAMS._replace(lns=(None,)))
  with pytest.raises(ValueError, match="params.global_init must be given"):
    mix(PARAMS._replace(global_init=None))
  with pytest.raises(ValueError, match="params.global_init must be None"):
    mix(PARAMS._replace(lns=(None,)), INPUTS[1:], dataclasses.replace(CFG, use_global=False))
  with pytest.raises(ValueError, match="inputs must hold 2 MemoryInputs"):
    mix(PARAMS, INPUTS[:1])


def test_tnt_mix_checks_shapes():
  """A local memory's inputs of another length or batch (which failed inside jnp.add), an
  empty sequence, states of the wrong head count or width, weights of the wrong shape."""
  short, empty = _inputs(L - 2), _inputs(0)
  with pytest.raises(ValueError, match=r"inputs\[1\].q must have the shape of the first"):
    branches.tnt_mix(CFG, PARAMS, [INPUTS[0], short])
  with pytest.raises(ValueError, match=r"inputs\[0\].q must have shape \[B, H, L, K\] with "
                                       r"B, L >= 1"):
    branches.tnt_mix(CFG, PARAMS, [empty, empty])
  with pytest.raises(ValueError, match=r"state0 leaves must start with \[2\]"):
    branches.tnt_mix(dataclasses.replace(CFG, use_global=False), branches.MemoryParams(
        None, (mm.init_state(MEM, jax.random.PRNGKey(0), K, 3, F64),), (None,), None),
        INPUTS[1:])
  with pytest.raises(ValueError, match="state0 maps inputs of size 5"):
    branches.tnt_mix(CFG, PARAMS._replace(global_init=mm.init_state(
        MEM, jax.random.PRNGKey(0), K + 1, H, F64)), INPUTS)
  weighted = dataclasses.replace(CFG, combine="weighted")
  for weights in (None, jnp.ones((3, H)), jnp.ones((2,))):
    with pytest.raises(ValueError, match=r"combine='weighted' needs params.weights of shape "
                                         r"\[2, 2\]"):
      branches.tnt_mix(weighted, PARAMS._replace(weights=weights), INPUTS)
  for field, bad in (("lr", INPUTS[1].lr[..., :3]), ("k", INPUTS[1].k[..., :3]),
                     ("v", INPUTS[1].v[:, :, :3]), ("log_retention", INPUTS[1].lr[0])):
    with pytest.raises(ValueError, match=rf"^inputs\[1\].{field} must have shape"):
      branches.tnt_mix(CFG, PARAMS, [INPUTS[0], INPUTS[1]._replace(**{field: bad})])


def test_branch_and_shard_helpers_check_their_lengths():
  inp, q = INPUTS[1], INPUTS[1].q
  for bad in (0, -4, 2.0):
    with pytest.raises(ValueError, match="shard_length must be a positive integer"):
      branches.local_branch(CFG, _state(1), inp, chunk_size=2, shard_length=bad)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
      branches.local_branch(CFG, _state(1), inp, chunk_size=bad, shard_length=4)
    with pytest.raises(ValueError, match="shard_length must be a positive integer"):
      branches.fold_shards(q, bad)
    with pytest.raises(ValueError, match="batch must be a positive integer"):
      branches.unfold_shards(q, bad)
  with pytest.raises(ValueError, match="multiple of shard_length=3"):
    branches.fold_shards(q, 3)
  with pytest.raises(ValueError, match="multiple of batch=3"):
    branches.unfold_shards(q, 3)
  for fn in (lambda e: branches.global_branch(CFG, _state(0), e),
             lambda e: branches.local_branch(CFG, _state(1), e, chunk_size=2, shard_length=4)):
    with pytest.raises(ValueError, match=r"inp.q must have shape \[B, H, L, K\]"):
      fn(_inputs(0))
  with pytest.raises(ValueError, match="reads must be one or more arrays of one shape"):
    branches.combine(CFG, [q, q[:, :, :-1]], None)
  with pytest.raises(ValueError, match="reads must be one or more arrays"):
    branches.combine(CFG, [], None)
  # the fold is a pure permutation: unfold(fold(x)) == x
  np.testing.assert_array_equal(branches.unfold_shards(branches.fold_shards(q, 4), B), q)


def test_qk_project_checks_its_arguments():
  q, k = INPUTS[0].q, INPUTS[0].k
  with pytest.raises(ValueError, match="q must have shape"):
    qk_projection.qk_project(q[0], k[0])
  with pytest.raises(ValueError, match="k must have shape"):
    qk_projection.qk_project(q, k[..., :3])
  for name, kw in (("block", dict(block=0)), ("reset_every", dict(reset_every=-1)),
                   ("rescale", dict(rescale="max")), ("eps", dict(eps=-1e-6))):
    with pytest.raises(ValueError, match=name):
      qk_projection.qk_project(q, k, **kw)


def test_qk_project_empty_sequence_is_a_value_error():
  with pytest.raises(ValueError, match=r"^q must hold at least one token \(L >= 1\)"):
    qk_projection.qk_project(INPUTS[0].q[:, :, :0], INPUTS[0].k[:, :, :0])


# -- non-finite values under jit stay causal ----------------------------------------------
_mix_jit = jax.jit(lambda inputs: branches.tnt_mix(CFG, PARAMS, inputs))
CLEAN = _mix_jit(INPUTS)


@PROPERTY
@given(memory=st.sampled_from([0, 1]), field=st.sampled_from(["q", "k", "v", "lr"]),
       t=st.integers(0, L - 1), value=NONFINITE)
def test_tnt_mix_nonfinite_token_stays_causal(memory, field, t, value):
  """A non-finite entry at token t of the global (0) or local (1) memory's inputs: outputs
  before t are bit-identical. A bad key, value or step poisons its memory after it: the
  global memory (read at chunk start) from the next global chunk to the end, a local memory
  from t to the end of its shard (the reset to W_init starts clean; the Q-K projection's
  running sum resets with it). A bad query poisons only its own token; every other output
  is bit-identical."""
  inputs = list(INPUTS)
  inp = inputs[memory]
  inputs[memory] = inp._replace(**{field: getattr(inp, field).at[:, :, t].set(value)})
  got = np.asarray(_mix_jit(inputs))
  np.testing.assert_array_equal(got[:, :, :t], CLEAN[:, :, :t])
  bad_rows = ~np.all(np.isfinite(got), axis=(0, 1, 3))
  tokens = np.arange(L)
  if field == "q":
    expected = tokens == t
  elif memory == 0:  # the global memory reads its chunk-start state (chunks of 4)
    first = (t // CFG.global_chunk_size + 1) * CFG.global_chunk_size
    expected = tokens >= first
  else:  # local shards of 4 tokens
    expected = (tokens >= t) & (tokens // CFG.shard_length == t // CFG.shard_length)
  np.testing.assert_array_equal(bad_rows, expected)
  np.testing.assert_array_equal(got[:, :, ~expected], CLEAN[:, :, ~expected])


@PROPERTY
@given(t=st.integers(0, L - 1), value=NONFINITE, side=st.sampled_from(["q", "k"]),
       reset=st.sampled_from([None, 4]))
def test_qk_project_nonfinite_token_stays_causal(t, value, side, reset):
  """M_t q_t with M_t the running sum of normalized k k^T: a bad key at t poisons the
  projections from t to the next reset, a bad query only its own token."""
  q, k = INPUTS[0].q, INPUTS[0].k
  fn = _qk_jit[reset]
  clean = fn(q, k)
  q2 = q.at[:, :, t].set(value) if side == "q" else q
  k2 = k.at[:, :, t].set(value) if side == "k" else k
  got = np.asarray(fn(q2, k2))
  tokens = np.arange(L)
  if side == "q":
    expected = tokens == t
  else:
    period = L if reset is None else reset
    expected = (tokens >= t) & (tokens // period == t // period)
  np.testing.assert_array_equal(~np.all(np.isfinite(got), axis=(0, 1, 3)), expected)
  np.testing.assert_array_equal(got[:, :, ~expected], np.asarray(clean)[:, :, ~expected])


_qk_jit = {r: jax.jit(lambda q, k, r=r: qk_projection.qk_project(q, k, reset_every=r, block=4))
           for r in (None, 4)}


# -- configurations -----------------------------------------------------------------------
@PROPERTY
@given(field=st.sampled_from(["global_chunk_size", "shard_length"]),
       value=st.one_of(st.integers(-8, 0), st.floats(0.5, 64.0), st.just(True)))
def test_tnt_config_lengths_must_be_positive_integers(field, value):
  with pytest.raises(ValueError, match=f"^{field} must be a positive integer"):
    TNTConfig(**{field: value})


@PROPERTY
@given(sizes=st.lists(st.integers(-4, 0), min_size=1, max_size=3))
def test_tnt_config_local_chunk_sizes_must_be_positive(sizes):
  with pytest.raises(ValueError, match="^local_chunk_sizes must be a positive integer"):
    TNTConfig(local_chunk_sizes=tuple(sizes))


@PROPERTY
@given(chunk=st.integers(1, 64), shard=st.integers(1, 256))
def test_tnt_config_shard_length_must_be_a_multiple_of_the_chunk(chunk, shard):
  if shard % chunk:
    with pytest.raises(ValueError, match=f"shard length S_L={shard} of local memory 0 must "
                                         f"be a multiple of its chunk size C_L={chunk}"):
      TNTConfig(local_chunk_sizes=(chunk,), shard_length=shard)
  else:
    assert TNTConfig(local_chunk_sizes=(chunk,), shard_length=shard).shard_lengths == (shard,)


def test_tnt_config_and_stage2_errors_name_the_argument():
  with pytest.raises(ValueError, match="local_shard_lengths .* must have one entry per local"):
    TNTConfig(local_chunk_sizes=(2, 4), local_shard_lengths=(8,))
  with pytest.raises(ValueError, match="TNT needs at least one memory"):
    TNTConfig(use_global=False, local_chunk_sizes=())
  with pytest.raises(ValueError, match="local_chunk_sizes must be a tuple"):
    TNTConfig(local_chunk_sizes=8)
  with pytest.raises(ValueError, match="must keep the 1 local memories"):
    stage2.stage2_config(CFG, (1, 1))
  with pytest.raises(ValueError, match="local_chunk_sizes must be a positive integer"):
    stage2.stage2_config(CFG, (0,))
  for length, shards, match in ((0, 2, "length"), (8, 0, "num_shards"),
                                (9, 2, "divisible by the 2 context shards"),
                                (8, 4, "must be a multiple of S_L=4")):
    with pytest.raises(ValueError, match=match):
      check_context_lengths(CFG, length, shards)
