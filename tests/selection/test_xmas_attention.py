"""XMAS cross-modal blocks: sown attention, both orientations against numpy re-derivations,
padding, and singular values against numpy's SVD."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tnx.nn.attention import Attention
from tnx.nn.layers import rope
from tnx.selection.xmas import attention, data, model, trajectory

N_I = data.N_IMAGE_TOKENS
EXTRA_PAD = 9
KEYS = ("tokens", "image") + trajectory.MASK_KEYS


@pytest.fixture(scope="module")
def caps():
  """Captures of a tiny float64 model on 15 items (3 per family, text-only included), at the
  pool's length and with EXTRA_PAD more padding positions."""
  dcfg = data.ShapesVQAConfig(image_dim=8)
  graphdef, params, rest = model.init(model.for_shapes_vqa(
      dcfg, d_model=16, n_layers=2, n_heads=2, dtype="float64"), 0)
  pool = {k: v for k, v in data.test_set(3, 3, dcfg).items() if k in KEYS + ("has_image",)}
  longer = dict(pool)
  for k in ("tokens",) + trajectory.MASK_KEYS:
    longer[k] = np.pad(pool[k], ((0, 0), (0, EXTRA_PAD)))
  fn = jax.jit(lambda s, b: trajectory.capture(graphdef, s, b))
  take = lambda p: {k: jnp.asarray(p[k]) for k in ("tokens", "image")}
  return pool, fn((params, rest), take(pool)), longer, fn((params, rest), take(longer))


def _one(layers, i):
  return [jax.tree.map(lambda a: a[i], lay) for lay in layers]


def test_sow_is_opt_in_and_matches_recomputation():
  att = Attention(8, 2, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (2, 5, 8), jnp.float64)
  def run(module):
    graphdef, state = nnx.split(module)
    return jax.jit(lambda s, x: nnx.capture(nnx.merge(graphdef, s), nnx.Intermediate)(x))(
        state, x)
  y_plain, off = run(att)
  assert not off                                         # nothing sown by default
  att.set_attributes(sow_attention=True)
  y, cap = run(att)
  np.testing.assert_array_equal(np.asarray(y), np.asarray(y_plain))
  q, k, probs = cap["q"].get_value()[0], cap["k"].get_value()[0], cap["probs"].get_value()[0]
  pos = jnp.arange(5)
  logits = np.einsum("blhk,bshk->bhls", np.asarray(rope(q, pos)), np.asarray(rope(k, pos)))
  logits = logits / np.sqrt(4) + np.where(np.tril(np.ones((5, 5))) > 0, 0.0, -np.inf)
  want = np.exp(logits - logits.max(-1, keepdims=True))
  want /= want.sum(-1, keepdims=True)
  probs = np.asarray(probs)
  np.testing.assert_allclose(probs, want, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)       # rows sum to 1
  upper = np.triu_indices(5, 1)
  assert np.all(probs[..., upper[0], upper[1]] == 0.0)              # causal


def _place(full_LxL, text, image):
  """Rows: text positions, columns: image positions, into a zero [L, N_I] block (numpy)."""
  block = np.zeros((len(text), N_I))
  rows, cols = np.flatnonzero(text), np.flatnonzero(image)
  block[np.ix_(rows, np.arange(len(cols)))] = full_LxL[np.ix_(rows, cols)]
  return block


def _numpy_reference(q_LxD, k_LxD, text, image, valid):
  s = k_LxD @ q_LxD.T / np.sqrt(q_LxD.shape[-1])   # rows: keys a, columns: queries b
  s = np.where(valid[None, :], s, -np.inf)
  p = np.exp(s - s.max(-1, keepdims=True))
  return _place(p / p.sum(-1, keepdims=True), text, image)


def _numpy_block(layers, pool, i, mode, valid=None):
  want = 0.0
  for lay in layers:
    if mode == "text_to_image":
      want = want + _place(np.asarray(lay["probs"][i]).mean(0), pool["text_mask"][i],
                           pool["image_mask"][i])
    else:
      q, k = (np.asarray(lay[n][i]).reshape(lay[n].shape[1], -1) for n in ("q", "k"))
      want = want + _numpy_reference(q, k, pool["text_mask"][i], pool["image_mask"][i],
                                     pool["token_mask"][i] if valid is None else valid)
  return want


@pytest.mark.parametrize("mode", attention.MODES)
def test_block_and_singular_values_match_numpy(caps, mode):
  pool, layers = caps[:2]
  cfg = trajectory.ExtractConfig(mode=mode, top_k=5)
  assert not pool["has_image"].all() and pool["has_image"].any()
  for i in range(len(pool["tokens"])):
    lay = _one(layers, i)
    mine = np.asarray(attention.cross_modal_block(
        lay, pool["text_mask"][i], pool["image_mask"][i], pool["token_mask"][i], mode=mode,
        n_image=N_I))
    want = _numpy_block(layers, pool, i, mode)
    np.testing.assert_allclose(mine, want, rtol=1e-10, atol=1e-12)
    vals = np.asarray(trajectory.example_values(lay, {k: pool[k][i] for k in
                                                      trajectory.MASK_KEYS}, cfg))
    np.testing.assert_allclose(vals, np.linalg.svd(want, compute_uv=False)[:5], rtol=1e-9,
                               atol=1e-12)
    if pool["has_image"][i]:
      assert vals[0] > 0
    else:
      np.testing.assert_array_equal(vals, 0.0)     # no image: empty block


@pytest.mark.parametrize("mode", attention.MODES)
def test_padding_does_not_change_singular_values(caps, mode):
  pool, layers, longer, layers_long = caps
  cfg = trajectory.ExtractConfig(mode=mode, top_k=5)
  for i in np.flatnonzero(pool["has_image"])[:4]:
    a = trajectory.example_values(_one(layers, i), {k: pool[k][i] for k in
                                                    trajectory.MASK_KEYS}, cfg)
    b = trajectory.example_values(_one(layers_long, i), {k: longer[k][i] for k in
                                                         trajectory.MASK_KEYS}, cfg)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)
  if mode == "reference":
    # Normalising over the padded query positions too (the public code) changes the block,
    # so the mask is what keeps padding out.
    i = int(np.flatnonzero(pool["has_image"])[0])
    unmasked = _numpy_block(layers_long, longer, i, mode, valid=np.ones(longer[
        "tokens"].shape[1], bool))
    assert np.abs(unmasked - _numpy_block(layers_long, longer, i, mode)).max() > 1e-6


def test_invalid_mode_top_k_and_layers():
  with pytest.raises(ValueError, match="mode"):
    trajectory.ExtractConfig(mode="image_to_text")
  with pytest.raises(ValueError, match="top_k"):
    trajectory.ExtractConfig(top_k=0)
  with pytest.raises(ValueError, match="top_k"):
    trajectory.ExtractConfig(top_k=N_I + 1)
  with pytest.raises(ValueError, match="layers"):
    attention.check_layer_ids((0, 5), 2)
