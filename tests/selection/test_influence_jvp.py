"""JVP embeddings vs finite differences and jacfwd on a small MLP, and the LM prefix feature
map (embedding, first blocks, final norm, last weighted position)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tnx.models import LM, LMConfig
from tnx.selection.influence import jvp, sandbox

CFG = sandbox.SandboxConfig(dim=4, hidden=5, num_classes=3, num_domains=3, per_domain=4,
                            target_size=2, heldout_size=2)


def test_jvp_embeddings_match_finite_differences_and_jacfwd():
  data = sandbox.make_sandbox(CFG, jnp.float64)
  params = sandbox.mlp_init(0, 4, 5, 3, jnp.float64)
  xs = {"x": data["pool"]["x"][:5]}
  feat = lambda p, e: sandbox.mlp_hidden(p, e["x"])
  key = jax.random.key(3)
  emb = jvp.jvp_embeddings(feat, params, xs, key=key, num_tangents=2, chunk_size=2)
  tangents = jvp.random_tangents(jax.random.split(key)[0], params, 2)
  assert emb.shape == (5, 2 * CFG.hidden)
  eps = 1e-6

  @jax.jit
  def references(v, x):  # J v by jacfwd and a central difference
    jac = jax.jacfwd(lambda p: feat(p, x))(params)
    jv = sum(jnp.tensordot(jac[k], v[k], axes=v[k].ndim) for k in params)
    plus = feat(jax.tree.map(lambda a, b: a + eps * b, params, v), x)
    minus = feat(jax.tree.map(lambda a, b: a - eps * b, params, v), x)
    return jv, (plus - minus) / (2 * eps)

  for r in range(2):
    v = jax.tree.map(lambda t: t[r], tangents)
    for i in range(5):
      jv, fd = references(v, jax.tree.map(lambda a: a[i], xs))
      got = emb[i, r * CFG.hidden:(r + 1) * CFG.hidden]
      np.testing.assert_allclose(got, jv, rtol=1e-10)
      np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-9)
  proj = jvp.jvp_embeddings(feat, params, xs, key=key, num_tangents=2, proj_dim=3)
  assert proj.shape == (5, 3)


def test_lm_prefix_features_run_the_first_blocks():
  cfg = LMConfig(vocab_size=16, d_model=8, n_layers=2, n_heads=2, dtype="float64")
  model = LM(cfg, rngs=nnx.Rngs(0))
  graphdef, p, r = nnx.split(model, nnx.Param, ...)
  params = jax.tree.map(lambda x: x.astype(jnp.float64), nnx.to_pure_dict(p))
  prefix, feat = jvp.lm_prefix_features(graphdef, params, nnx.to_pure_dict(r), 1)
  assert set(prefix["blocks"]) == {0}
  tokens = jnp.array([3, 4, 5, 6, 7, 0])
  weights = jnp.array([0, 0, 1, 1, 0, 0.0])  # last weighted position: 3
  h = jax.jit(feat)(prefix, {"inputs": tokens, "weights": weights})
  want = jax.jit(lambda t: model.final_norm(model.blocks[0](model.embed(t[None]).astype(
      jnp.float64)))[0, 3])(tokens)
  np.testing.assert_allclose(h, want, rtol=1e-12)
  # Changing a later block does not change the features.
  other = dict(params, blocks={**params["blocks"], 1: jax.tree.map(
      lambda x: x + 1.0, params["blocks"][1])})
  _, feat2 = jvp.lm_prefix_features(graphdef, other, nnx.to_pure_dict(r), 1)
  np.testing.assert_allclose(jax.jit(feat2)(prefix, {"inputs": tokens, "weights": weights}), h)
  with pytest.raises(ValueError, match="num_blocks=3 exceeds the model's 2 blocks"):
    jvp.lm_prefix_features(graphdef, params, nnx.to_pure_dict(r), 3)
