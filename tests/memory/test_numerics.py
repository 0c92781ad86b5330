"""Finite where the math is finite: saturated gates, large inputs, bfloat16, NaN causality, the
opt-in finiteness check, checks that run under jit, and the README's memory-core snippet."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tnx.memory import chunked, titans, ttt
from tnx.memory import model as mm
from tnx.memory.atlas import AtlasConfig, AtlasMixer
from tnx.memory.inputs import MemoryInputs
from tnx.tnt import branches, qk_projection
from tnx.tnt.config import TNTConfig
from tnx.tnt.layer import TNTMemory

F32 = jnp.float32
B, H, K = 2, 2, 4


def _all_finite(tree) -> bool:
  return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree))


# -- default layers at large input scales, float32 and bfloat16 ---------------------------
D, L = 16, 12
SMALL = dict(num_heads=2)  # shapes only; every numerical setting is the default
LAYERS = {
    "titans": lambda dt: titans.TitansMemory(D, titans.TitansConfig(
        chunk_size=4, dtype=dt, **SMALL), rngs=nnx.Rngs(0)),
    "ttt": lambda dt: ttt.TTTLayer(D, ttt.TTTConfig(chunk_size=4, dtype=dt, **SMALL),
                                   rngs=nnx.Rngs(0)),
    "tnt": lambda dt: TNTMemory(D, TNTConfig(global_chunk_size=8, shard_length=8, dtype=dt,
                                             **SMALL), rngs=nnx.Rngs(0)),
    "atlas": lambda dt: AtlasMixer(D, AtlasConfig(chunk_size=4, dtype=dt, **SMALL),
                                   rngs=nnx.Rngs(0)),
}


def _layer_grads(name, dtype, scale):
  layer = LAYERS[name](dtype)
  graphdef, params, rest = nnx.split(layer, nnx.Param, ...)
  x = scale * jax.random.normal(jax.random.PRNGKey(1), (2, L, D), F32)

  def loss(p, x):
    y = nnx.merge(graphdef, p, rest)(x)
    return jnp.mean(jnp.square(y.astype(F32))), y

  (_, y), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, x)
  return y, grads


FAST = [("titans", F32, 10.0), ("titans", jnp.bfloat16, 100.0), ("ttt", jnp.bfloat16, 100.0),
        ("tnt", jnp.bfloat16, 100.0), ("atlas", jnp.bfloat16, 100.0)]
SWEEP = [(n, dt, s) for n in LAYERS for dt in (F32, jnp.bfloat16) for s in (1.0, 10.0, 100.0)]


@pytest.mark.parametrize("name,dtype,scale", FAST)
def test_default_layers_finite_outputs_and_gradients(name, dtype, scale):
  """x ~ N(0, scale^2): sigmoid gates saturate (Titans' forget gate rounds to 1 in float32 at
  scale 7), yet the output and every gradient (parameters and input) stay finite."""
  y, grads = _layer_grads(name, dtype, scale)
  assert _all_finite(y) and _all_finite(grads)


@pytest.mark.slow
@pytest.mark.parametrize("name,dtype,scale", [c for c in SWEEP if c not in FAST])
def test_default_layers_finite_sweep(name, dtype, scale):
  y, grads = _layer_grads(name, dtype, scale)
  assert _all_finite(y) and _all_finite(grads)


# -- the primitive at saturated gate logits ----------------------------------------------
def _problem(length=8, dtype=F32, dk=K):
  ks = jax.random.split(jax.random.PRNGKey(0), 4)
  unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
  q, k = (unit(jax.random.normal(kk, (B, H, length, dk), dtype)) for kk in ks[:2])
  v = jax.random.normal(ks[2], (B, H, length, K), dtype)
  return q, k, v


@pytest.mark.parametrize("chunk", [1, 4])
@pytest.mark.parametrize("logit", [50.0, -50.0])
def test_chunked_gradient_finite_at_saturated_gates(chunk, logit):
  """Forget and momentum logits of +-50 (gates exactly 0 or 1 in float32) and lr logits of
  +-50: the gradient with respect to every input, every logit and the initial state is
  finite (log-space gates: log_sigmoid has a finite derivative everywhere)."""
  cfg = mm.MemoryModelConfig(depth=2, expansion=2)
  s0 = mm.init_state(cfg, jax.random.PRNGKey(1), K, H, F32)
  q, k, v = _problem()
  z = jnp.full((3, B, H, q.shape[2]), logit, F32)

  def loss(s, q, k, v, z):
    o, _ = chunked.chunked_memory(cfg, s, q, k, v, 0.1 * jax.nn.sigmoid(z[0]),
                                  chunk_size=chunk, rule=chunked.UpdateRule(optimizer="momentum"),
                                  log_mom_decay=jax.nn.log_sigmoid(z[1]),
                                  log_retention=jax.nn.log_sigmoid(-z[2]))
    return jnp.sum(jnp.sin(o))

  val, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4)))(s0, q, k, v, z)
  assert bool(jnp.isfinite(val)) and _all_finite(grads)


@pytest.mark.parametrize("optimizer,chunk", [("momentum", 1), ("muon", 4), ("gd", 4)])
def test_omega_gradient_finite_at_gate_extremes(optimizer, chunk):
  """The Omega rule (window 3, window-owned gates) at retention, momentum-decay, lr and
  window-gate logits of +50 and -50 (retention, momentum decay and window gates exactly 0 or
  1; lr within the stable range): value and gradients finite with respect to every input,
  logit and the initial state. Muon at window gates ~1e-22 normalizes a tiny momentum."""
  cfg = mm.MemoryModelConfig.from_kind("gated_mlp" if optimizer == "muon" else "mlp",
                                       expansion=2)
  s0 = mm.init_state(cfg, jax.random.PRNGKey(1), 6, H, F32, out_dim=K)
  q, k, v = _problem(dk=6)
  rule = chunked.UpdateRule(window=3, optimizer=optimizer, step_placement="outside")
  for logit in (50.0, -50.0):
    z = jnp.full((4, B, H, q.shape[2]), logit, F32)
    zg = jnp.full((B, H, q.shape[2], 3), logit, F32)

    def loss(s, q, k, v, z, zg):
      mom = dict(log_mom_decay=jax.nn.log_sigmoid(z[1])) if rule.has_momentum else {}
      o, _ = chunked.chunked_memory(cfg, s, q, k, v, 0.02 * jax.nn.sigmoid(z[0]),
                                    chunk_size=chunk,
                                    rule=rule, log_retention=jax.nn.log_sigmoid(z[2]),
                                    window_gate=jax.nn.sigmoid(zg), **mom)
      return jnp.sum(jnp.sin(o))

    val, grads = jax.jit(jax.value_and_grad(loss, argnums=range(6)))(s0, q, k, v, z, zg)
    assert bool(jnp.isfinite(val)) and _all_finite(grads), logit


# -- causality under NaN -----------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1, 4, 8])
def test_nan_at_token_5_never_reaches_earlier_outputs(chunk):
  """A NaN in k or v at token 5 leaves outputs 0-4 bit-identical (intra-chunk dual form,
  chunk-start reads, the Omega window, the Q-K projection, the TNT local branch); the outputs
  that depend on token 5 are NaN, as the math says."""
  length = 12
  q, k, v = _problem(length, jnp.float64)
  cfg = mm.MemoryModelConfig(depth=2, expansion=2, ln_residual=True)
  s0 = mm.init_state(cfg, jax.random.PRNGKey(2), K, H, jnp.float64)
  ln = mm.init_ln(K, H, jnp.float64)
  lr = jnp.full((B, H, length), 0.1)
  gates = dict(log_mom_decay=jnp.full((B, H, length), -0.2),
               log_retention=jnp.full((B, H, length), -0.05))
  omega_cfg = mm.MemoryModelConfig.from_kind("mlp", expansion=2)
  omega_s0 = mm.init_state(omega_cfg, jax.random.PRNGKey(3), K, H, jnp.float64)
  runs = {
      "intra": lambda q, k, v: chunked.chunked_memory(
          cfg, s0, q, k, v, lr, chunk_size=chunk, rule=chunked.UpdateRule(optimizer="momentum"),
          ln=ln, **gates)[0],
      "chunk_start": lambda q, k, v: chunked.chunked_memory(
          cfg, s0, q, k, v, lr, chunk_size=chunk,
          rule=chunked.UpdateRule(optimizer="momentum", retrieval="chunk_start"), ln=ln,
          **gates)[0],
      "omega": lambda q, k, v: chunked.chunked_memory(
          omega_cfg, omega_s0, q, k, v, lr, chunk_size=chunk,
          rule=chunked.UpdateRule(window=3, optimizer="muon", step_placement="outside"),
          window_gate=jnp.full((B, H, length, 3), 0.9), **gates)[0],
      "qk": lambda q, k, v: qk_projection.qk_project(q, k, block=4),
      "tnt_local": lambda q, k, v: branches.local_branch(
          TNTConfig(num_heads=H, memory=cfg, dtype=jnp.float64), s0,
          MemoryInputs(q, k, v, lr), chunk_size=chunk, shard_length=length, ln=ln)[0],
  }
  for name, run in runs.items():
    clean = run(q, k, v)
    assert _all_finite(clean), name
    for which in ("k", "v"):
      if name == "qk" and which == "v":
        continue
      kk = k.at[:, :, 5].set(jnp.nan) if which == "k" else k
      vv = v.at[:, :, 5].set(jnp.nan) if which == "v" else v
      got = run(q, kk, vv)
      np.testing.assert_array_equal(got[:, :, :5], clean[:, :, :5], err_msg=f"{name} {which}")
      # A chunk-start read sees token 5 only from the next chunk on.
      first_nan = (5 // chunk + 1) * chunk if name == "chunk_start" else 5
      assert bool(jnp.all(jnp.isnan(got[:, :, first_nan:]))), (name, which)


# -- the finiteness check and checks under jit -------------------------------------------
def test_check_finite_names_the_token_and_head():
  cfg = mm.MemoryModelConfig(depth=1)
  s0 = mm.init_state(cfg, jax.random.PRNGKey(0), K, H, F32)
  q, k, v = _problem(12)
  lr = jnp.full((B, H, 12), 0.1, F32)
  bad_k = k.at[1, 1, 5].set(jnp.nan)
  with pytest.raises(FloatingPointError, match="token 5 of head 1 .batch row 1.*inputs"):
    chunked.chunked_memory(cfg, s0, q, bad_k, v, lr, chunk_size=4, check_finite=True)
  # Unnormalized keys and a large step: the inner loop diverges from finite inputs.
  big = 30.0 * jax.random.normal(jax.random.PRNGKey(5), (B, H, 64, K), F32)
  with pytest.raises(FloatingPointError, match="diverged"):
    chunked.chunked_memory(cfg, s0, big, big, big, jnp.ones((B, H, 64), F32), chunk_size=1,
                           check_finite=True)
  # Under jit the same message arrives inside the runtime error.
  fn = jax.jit(lambda k: chunked.chunked_memory(cfg, s0, q, k, v, lr, chunk_size=4,
                                                check_finite=True)[0])
  assert _all_finite(fn(k))
  with pytest.raises(Exception, match="token 5 of head 1"):
    fn(bad_k).block_until_ready()


def test_static_checks_run_under_jit_value_checks_do_not():
  """Chunk size, shapes and the rule are checked at trace time; value checks (lr >= 0) only
  on concrete arrays (documented): a negative lr under jit runs."""
  cfg = mm.MemoryModelConfig(depth=1)
  s0 = mm.init_state(cfg, jax.random.PRNGKey(0), K, H, F32)
  q, k, v = _problem(8)
  call = lambda lr, **kw: chunked.chunked_memory(cfg, s0, q, k, v, lr, **kw)[0]
  lr = jnp.full((B, H, 8), 0.1, F32)
  with pytest.raises(ValueError, match="chunk_size"):
    jax.jit(lambda lr: call(lr, chunk_size=0))(lr)
  with pytest.raises(ValueError, match="lr must have shape"):
    jax.jit(lambda lr: call(lr[..., :3], chunk_size=2))(lr)
  with pytest.raises(ValueError, match="lr must have all entries"):
    call(-lr, chunk_size=2)
  assert jax.jit(lambda lr: call(lr, chunk_size=2))(-lr).shape == q.shape


def test_readme_memory_core_snippet_runs_and_is_finite():
  readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
  section = readme[readme.index("## Using the memory core"):]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  scope: dict = {}
  exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the project's own README
  assert _all_finite(scope["o"]) and _all_finite(scope["o_t"])


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["omeganet", "dla", "swla", "dot", "deep_transformer",
                                     "swdt"])
def test_default_gd_atlas_variants_stay_bounded_on_512_tokens(variant):
  """The memory read of the default layer at initialization on x ~ N(0, 1), 512 tokens, stays
  within 100x the largest value it is asked to store."""
  layer = AtlasMixer(64, AtlasConfig(variant=variant), rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 512, 64), F32)
  inputs, gates, _ = layer.project(layer.cfg, x)
  o, _ = layer.memory(layer.cfg, inputs, gates)
  assert _all_finite(o) and float(jnp.max(jnp.abs(o))) <= 100 * float(jnp.max(jnp.abs(
      inputs[0].v)))
