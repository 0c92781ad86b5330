"""Bad input to the public API of tnx.memory: NaN/inf values, negative or zero step sizes and
chunk sizes, log gates > 0, empty arrays and mismatched shapes give a ValueError naming the
argument, or (non-finite values under jit, where values cannot be checked) NaN in exactly the
outputs that depend on the bad token; never another exception and never finite garbage.

Property tests draw values, not shapes, so every example reuses one compilation."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from tnx.memory import chunked, titans, ttt
from tnx.memory import model as mm
from tnx.memory.atlas import AtlasConfig, AtlasMixer
from tnx.memory.mixer_config import MemoryLayerConfig
from tnx.tnt.config import TNTConfig
from tnx.tnt.layer import TNTMemory

F64 = jnp.float64
B, H, L, K, C = 1, 2, 8, 4, 4
PROPERTY = settings(max_examples=25, deadline=None, derandomize=True)
NONFINITE = st.sampled_from([np.nan, np.inf, -np.inf])
TOKEN = st.integers(0, L - 1)


def _unit(x):
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def _problem():
  ks = jax.random.split(jax.random.PRNGKey(0), 3)
  q, k = (_unit(jax.random.normal(kk, (B, H, L, K), F64)) for kk in ks[:2])
  v = jax.random.normal(ks[2], (B, H, L, K), F64)
  return dict(q=q, k=k, v=v, lr=jnp.full((B, H, L), 0.1, F64),
              log_mom_decay=jnp.full((B, H, L), -0.2, F64),
              log_retention=jnp.full((B, H, L), -0.05, F64))


CFG = mm.MemoryModelConfig(depth=2, expansion=2)
S0 = mm.init_state(CFG, jax.random.PRNGKey(1), K, H, F64)
RULE = chunked.UpdateRule(optimizer="momentum")
INPUTS = _problem()


def _memory(q, k, v, lr, log_mom_decay, log_retention, chunk_size=C, **kw):
  return chunked.chunked_memory(CFG, S0, q, k, v, lr, chunk_size=chunk_size, rule=RULE,
                                log_mom_decay=log_mom_decay, log_retention=log_retention,
                                **kw)[0]


_memory_jit = jax.jit(_memory)
CLEAN = _memory_jit(**INPUTS)


def _rows_nonfinite(o_BxHxLxK) -> np.ndarray:
  """[L] bool: whether any entry of token t's output is non-finite."""
  return ~np.all(np.isfinite(np.asarray(o_BxHxLxK)), axis=(0, 1, 3))


# -- non-finite values -------------------------------------------------------------------
@PROPERTY
@given(name=st.sampled_from(sorted(INPUTS)), t=TOKEN, value=NONFINITE)
def test_nonfinite_value_under_jit_stays_causal(name, t, value):
  """Under jit the values cannot be checked: a non-finite entry of any input at token t
  leaves outputs 0..t-1 bit-identical; a bad query poisons only its own read, a bad key,
  value, step size or gate the state from t on (every later output is NaN, none is finite
  garbage). A log gate of -inf (a gate of exactly 0) counts as non-finite: the layers form
  log gates with log_sigmoid, which is finite for every finite logit."""
  bad = dict(INPUTS, **{name: INPUTS[name].at[:, :, t].set(value)})
  got = _memory_jit(**bad)
  np.testing.assert_array_equal(got[:, :, :t], CLEAN[:, :, :t])
  expected = np.arange(L) == t if name == "q" else np.arange(L) >= t
  np.testing.assert_array_equal(_rows_nonfinite(got), expected)
  if name == "q":
    np.testing.assert_array_equal(got[:, :, t + 1:], CLEAN[:, :, t + 1:])


@PROPERTY
@given(t=TOKEN, value=st.one_of(st.sampled_from([np.nan, -np.inf]), st.floats(-1e6, -1e-12)))
def test_concrete_lr_out_of_range_is_a_value_error(t, value):
  lr = INPUTS["lr"].at[0, 1, t].set(value)
  with pytest.raises(ValueError, match=r"^lr must have all entries in \[0.0, inf\]"):
    _memory(**dict(INPUTS, lr=lr))


def test_concrete_infinite_lr_or_zero_gate_is_a_value_error():
  """lr = +inf and a log gate of -inf (a gate of exactly 0, outside (0, 1]) are refused on
  concrete arrays; under jit they poison causally (test above)."""
  with pytest.raises(ValueError, match="^lr must be finite, found inf"):
    _memory(**dict(INPUTS, lr=INPUTS["lr"].at[:, :, 3].set(np.inf)))
  for name in ("log_mom_decay", "log_retention"):
    with pytest.raises(ValueError, match=f"^{name} must be finite: -inf is a gate of exactly 0"):
      _memory(**dict(INPUTS, **{name: INPUTS[name].at[:, :, 3].set(-np.inf)}))


@PROPERTY
@given(name=st.sampled_from(["log_mom_decay", "log_retention"]), t=TOKEN,
       value=st.one_of(st.just(np.inf), st.floats(1e-12, 1e6)))
def test_concrete_positive_log_gate_is_a_value_error(name, t, value):
  gate = INPUTS[name].at[0, 0, t].set(value)
  with pytest.raises(ValueError, match=rf"^{name} must be the log of a gate in \(0, 1\]"):
    _memory(**dict(INPUTS, **{name: gate}))


def test_zero_lr_and_zero_log_gates_are_valid():
  """lr = 0 with retention 1 (log 0) writes nothing: every read is the initial memory's; both
  are edges of the valid range, not errors."""
  o = _memory(**dict(INPUTS, lr=jnp.zeros((B, H, L), F64),
                     log_retention=jnp.zeros((B, H, L), F64)))
  (l1, l2), q = S0, INPUTS["q"][0]  # f(x) = gelu(x W1 + b1) W2 + b2 per head
  hidden = jax.nn.gelu(jnp.einsum("hlk,hkm->hlm", q, l1["w"]) + l1["b"][:, None])
  read0 = jnp.einsum("hlm,hmk->hlk", hidden, l2["w"]) + l2["b"][:, None]
  np.testing.assert_allclose(o[0], read0, rtol=1e-12, atol=1e-12)
  assert np.all(np.isfinite(_memory(**dict(INPUTS, log_mom_decay=jnp.zeros((B, H, L)),
                                           log_retention=jnp.zeros((B, H, L))))))


# -- static arguments: chunk size, remat group, rule ---------------------------------------
@PROPERTY
@given(value=st.one_of(st.integers(-10, 0), st.floats(0.5, 8.0), st.just(True),
                       st.just("4")))
def test_bad_chunk_size_is_a_value_error(value):
  with pytest.raises(ValueError, match=r"^chunk_size must be a positive integer"):
    _memory(**INPUTS, chunk_size=value)
  carry = chunked.init_carry(S0, B, RULE)
  step = {n: x[:, :, 0] for n, x in INPUTS.items()}
  with pytest.raises(ValueError, match=r"^chunk_size must be a positive integer"):
    chunked.decode_step(CFG, carry, step["q"], step["k"], step["v"], step["lr"],
                        chunk_size=value, rule=RULE, log_mom_decay=step["log_mom_decay"])


@pytest.mark.parametrize("field,value", [("window", 0), ("optimizer", "adam"),
                                         ("step_placement", "before"), ("ns_steps", -1),
                                         ("ns_coeffs", (1.0, 2.0)), ("inner_loss", "cosine"),
                                         ("retrieval", "last")])
def test_bad_update_rule_is_a_value_error(field, value):
  with pytest.raises(ValueError, match=field):
    dataclasses.replace(RULE, **{field: value})


def test_bad_remat_group_and_rule_type_are_value_errors():
  with pytest.raises(ValueError, match="remat_group"):
    _memory(**INPUTS, remat_group=-1)
  with pytest.raises(ValueError, match="rule must be an UpdateRule"):
    chunked.chunked_memory(CFG, S0, *(INPUTS[n] for n in ("q", "k", "v", "lr")),
                           chunk_size=C, rule="momentum")


# -- shapes -------------------------------------------------------------------------------
def _shrink(x, axis):
  return jnp.take(x, jnp.arange(x.shape[axis] - 1), axis=axis)


SHAPE_CASES = {
    "q": [("q", lambda x: x[0])],                      # 3-D
    "k": [("k", lambda x: _shrink(x, 3)), ("k", lambda x: _shrink(x, 2))],
    "v": [("v", lambda x: _shrink(x, 2)), ("v", lambda x: x[..., 0])],
    "lr": [("lr", lambda x: _shrink(x, 2)), ("lr", lambda x: x[..., None])],
    "log_mom_decay": [("log_mom_decay", lambda x: _shrink(x, 1))],
    "log_retention": [("log_retention", lambda x: x[0])],
}


@pytest.mark.parametrize("name,change", [c for cases in SHAPE_CASES.values() for c in cases])
def test_mismatched_shapes_are_value_errors(name, change):
  with pytest.raises(ValueError, match=rf"^{name} must have shape"):
    _memory(**dict(INPUTS, **{name: change(INPUTS[name])}))


def test_mismatched_state_and_gates_are_value_errors():
  q, k, v, lr = (INPUTS[n] for n in ("q", "k", "v", "lr"))
  call = lambda s0, **kw: chunked.chunked_memory(CFG, s0, q, k, v, lr, chunk_size=C, **kw)
  with pytest.raises(ValueError, match=r"state0 leaves must start with \[2\]"):
    call(mm.init_state(CFG, jax.random.PRNGKey(0), K, 3, F64))
  with pytest.raises(ValueError, match="state0 maps inputs of size 5"):
    call(mm.init_state(CFG, jax.random.PRNGKey(0), K + 1, H, F64))
  with pytest.raises(ValueError, match="state0 has 1 layers but cfg.depth=2"):
    call(S0[:1])
  with pytest.raises(ValueError, match="state0 .* or carry must be given"):
    call(None)
  with pytest.raises(ValueError, match="log_mom_decay was given but rule.optimizer='gd'"):
    call(S0, log_mom_decay=INPUTS["log_mom_decay"])
  window = chunked.UpdateRule(window=3)
  with pytest.raises(ValueError, match="window_gate must have shape"):
    call(S0, rule=window, window_gate=jnp.ones((B, H, L, 2)))
  carry = chunked.init_carry(S0, B, RULE)
  with pytest.raises(ValueError, match="give state0 or carry, not both"):
    call(S0, carry=carry, rule=RULE)
  with pytest.raises(ValueError, match="carry.momentum must be None"):
    call(None, carry=carry)


def test_decode_step_checks_shapes_and_the_carry():
  carry = chunked.init_carry(S0, B, RULE)
  step = {n: x[:, :, 0] for n, x in INPUTS.items()}
  call = lambda carry=carry, rule=RULE, **kw: chunked.decode_step(
      CFG, carry, *(kw.get(n, step[n]) for n in ("q", "k", "v", "lr")), chunk_size=C,
      rule=rule)
  with pytest.raises(ValueError, match=r"^q must have shape \[B, H, K\]"):
    call(q=INPUTS["q"])
  with pytest.raises(ValueError, match="^k must have shape"):
    call(k=step["k"][..., :3])
  with pytest.raises(ValueError, match="^lr must have shape"):
    call(lr=INPUTS["lr"])
  with pytest.raises(ValueError, match="^lr must have all entries"):
    call(lr=-step["lr"])
  with pytest.raises(ValueError, match="carry.momentum must be None"):
    call(rule=chunked.DEFAULT_RULE)


def test_empty_batch_gives_an_empty_result():
  empty = {n: x[:0] for n, x in INPUTS.items()}
  assert _memory(**empty).shape == (0, H, L, K)


def test_empty_sequence_is_a_value_error():
  empty = {n: x[:, :, :0] for n, x in INPUTS.items()}
  with pytest.raises(ValueError, match=r"^q must hold at least one token .*\[1, 2, 0, 4\]"):
    _memory(**empty)


# -- the layers ----------------------------------------------------------------------------
D, LX = 16, 12
SMALL = dict(num_heads=2, dtype=F64, param_dtype=F64)
LAYERS = {
    "titans": lambda d=D, **kw: titans.TitansMemory(
        d, titans.TitansConfig(chunk_size=4, **(SMALL | kw)), rngs=nnx.Rngs(0)),
    "ttt": lambda d=D, **kw: ttt.TTTLayer(d, ttt.TTTConfig(chunk_size=4, **(SMALL | kw)),
                                          rngs=nnx.Rngs(0)),
    "tnt": lambda d=D, **kw: TNTMemory(d, TNTConfig(global_chunk_size=8, shard_length=8,
                                                    local_chunk_sizes=(4,), **(SMALL | kw)),
                                       rngs=nnx.Rngs(0)),
    "atlas": lambda d=D, **kw: AtlasMixer(d, AtlasConfig(chunk_size=4, **(SMALL | kw)),
                                          rngs=nnx.Rngs(0)),
}
X = jax.random.normal(jax.random.PRNGKey(1), (2, LX, D), F64)


@functools.cache
def _default_layer(name):
  return LAYERS[name]()


@pytest.mark.parametrize("name", LAYERS)
def test_layer_width_and_head_errors_name_the_argument(name):
  """D = 15 with 4 heads, and 3 heads at D = 16 (which would silently give head_dim 5), are
  ValueErrors at construction, not failures inside dot_general; an explicit head_dim is the
  way to have H * K != D."""
  with pytest.raises(ValueError, match="num_heads=4 must divide d_model=15"):
    LAYERS[name](15, num_heads=4)
  with pytest.raises(ValueError, match="num_heads=3 must divide d_model=16"):
    LAYERS[name](16, num_heads=3)
  if name == "titans":  # an explicit head_dim builds (H * K = 12 != D = 16 on purpose)
    layer = LAYERS[name](16, num_heads=3, head_dim=4)
    assert (layer.project.num_heads, layer.project.head_dim) == (3, 4)
  with pytest.raises(ValueError, match="d_model must be a positive integer"):
    LAYERS[name](0)


@pytest.mark.parametrize("name", LAYERS)
def test_layer_input_shape_errors_name_the_argument(name):
  """A 2-D input (which would fail inside jnp.pad), a wrong width, an empty batch or sequence:
  ValueErrors naming the argument, in the forward, prefill and decode paths."""
  layer = _default_layer(name)
  for bad in (X[0], X[..., :15], X[:0], X[:, :0], X[None]):
    for call in (layer, layer.prefill):
      with pytest.raises(ValueError, match=r"^x_BxLxD must be \[B, L, D\]"):
        call(bad)
  cache = layer.init_cache(2)
  for bad in (X, X[:, 0, :15], X[:0, 0]):
    with pytest.raises(ValueError, match=r"^x_BxD must be \[B, D\]"):
      layer.decode(bad, cache)


@pytest.mark.parametrize("name", LAYERS)
def test_layer_nonfinite_input_eager_error_and_causal_nan_under_jit(name):
  """Called on concrete arrays the layer rejects a non-finite input naming it; under jit
  (no value checks) a NaN or inf at token t of one sequence leaves that sequence's earlier
  outputs and the other sequence bit-identical, and every later output of it is NaN."""
  layer = _default_layer(name)
  with pytest.raises(ValueError, match="^x_BxLxD must be finite everywhere"):
    layer(X.at[1, 3, 2].set(np.nan))
  graphdef, state = nnx.split(layer)
  fn = jax.jit(lambda x: nnx.merge(graphdef, state)(x))
  clean = fn(X)

  @settings(max_examples=8, deadline=None, derandomize=True)
  @given(t=st.integers(0, LX - 1), value=NONFINITE)
  def check(t, value):
    got = fn(X.at[0, t, 5].set(value))
    np.testing.assert_array_equal(got[1], clean[1])
    np.testing.assert_array_equal(got[0, :t], clean[0, :t])
    assert bool(jnp.all(jnp.isnan(got[0, t:])))

  check()


@PROPERTY
@given(cls=st.sampled_from([titans.TitansConfig, ttt.TTTConfig, TNTConfig, AtlasConfig]),
       field=st.sampled_from(["lr_max", "lr_bias_init", "momentum_bias_init",
                              "forget_bias_init"]),
       value=st.one_of(NONFINITE, st.floats(-1e6, 0.0)))
def test_layer_config_scalars_out_of_range_are_value_errors(cls, field, value):
  """lr_max must be finite and > 0; the gate biases finite (any sign)."""
  if field != "lr_max" and np.isfinite(value):
    assert getattr(cls(**{field: value}), field) == value
    return
  with pytest.raises(ValueError, match=f"^{field} must be a finite number"):
    cls(**{field: value})


@PROPERTY
@given(field=st.sampled_from(["depth", "expansion", "init_scale"]),
       value=st.one_of(NONFINITE, st.integers(-5, 0), st.floats(-1e3, -1e-9)))
def test_memory_model_config_out_of_range_is_a_value_error(field, value):
  if field == "init_scale" and value == 0:
    assert mm.MemoryModelConfig(init_scale=0).init_scale == 0  # a zero initial memory
    return
  with pytest.raises(ValueError, match=f"^{field} must be"):
    mm.MemoryModelConfig(**{field: value})


def test_shared_config_needs_heads_that_fit():
  with pytest.raises(ValueError, match="num_heads=3 must divide d_model=16"):
    MemoryLayerConfig(num_heads=3).heads(16)
  assert MemoryLayerConfig(num_heads=3, head_dim=5).heads(16) == (3, 5)


def test_memory_config_epsilon_must_be_positive():
  for eps in (0.0, -1e-6, float("nan")):
    with pytest.raises(ValueError, match="^ln_eps must be a finite number > 0"):
      mm.MemoryModelConfig(ln_eps=eps)
