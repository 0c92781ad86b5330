"""Cross-modal attention blocks of XMAS (arXiv 2510.01454, section 4), per example.

The model's attention layers sow their intermediates (tnx.nn.attention.Attention with
`sow_attention=True`: 'probs' [B, H, L, S] and the pre-RoPE 'q', 'k' [B, L, H, K]); nothing in
the model is changed. `captured_layers` collects them layer by layer. Two orientations:

* `text_to_image` (textbook): the model's own causal, post-RoPE attention probabilities with
  text queries as rows and image keys as columns, averaged over heads:
  X^(l)[a, j] = mean_h P_h^(l)[text a, image j].
* `reference` (the public code's recomputation): from the pre-RoPE projections with all heads
  merged (q, k [L, D]) a fresh score matrix is formed without causal mask,
  S[a, b] = softmax_b(k_a . q_b / sqrt(D)) (key position a, normalised over every query
  position b), and the block keeps key = text rows, query = image columns.

Both sum the per-layer blocks over the chosen layers. Blocks are [L, N_I]: every sequence
position is a row, and rows that are not text tokens (padding, system prompt, image, separator)
are exactly zero, which leaves the singular values unchanged; columns are the image positions in
order. Padding is masked in `reference` as well: padded query positions are excluded from the
softmax (the public code normalises over them too; it also keeps padded rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tnx import validation

MODES = ("text_to_image", "reference")
CAPTURED = ("probs", "q", "k")


def captured_layers(intermediates: Any) -> list[dict[str, jax.Array]]:
  """[{'probs', 'q', 'k'}] per attention layer (module-path order) from the sown
  `nnx.Intermediate` state of one forward pass."""
  layers: dict[tuple[Any, ...], dict[str, jax.Array]] = {}
  for path, var in nnx.to_flat_state(intermediates):
    name = path[-1]
    if name not in CAPTURED:
      continue
    value = var.get_value()
    if len(value) != 1:
      raise ValueError(f"attention layer {'/'.join(map(str, path[:-1]))} sowed {name!r} "
                       f"{len(value)} times in one forward pass; expected once")
    layers.setdefault(tuple(path[:-1]), {})[name] = value[0]
  if not layers:
    raise ValueError("the model sowed no attention intermediates: it needs attention layers "
                     "with a `sow_attention` attribute (tnx.nn.attention.Attention)")
  return [layers[p] for p in sorted(layers, key=lambda p: tuple(map(str, p)))]


def _image_columns(image_mask_L: jax.Array, n_image: int) -> tuple[jax.Array, jax.Array]:
  """Positions of the first `n_image` image tokens [N_I] and which of them exist [N_I]."""
  idx = jnp.nonzero(image_mask_L, size=n_image, fill_value=0)[0]
  return idx, jnp.arange(n_image) < jnp.sum(image_mask_L)


def _select(full_LxL: jax.Array, text_mask_L: jax.Array, image_mask_L: jax.Array,
            n_image: int) -> jax.Array:
  idx, ok = _image_columns(image_mask_L, n_image)
  block = full_LxL[:, idx]
  return jnp.where(text_mask_L[:, None] & ok[None, :], block, jnp.zeros_like(block))


def text_to_image_block(probs_HxLxS: jax.Array, text_mask_L: jax.Array,
                        image_mask_L: jax.Array, n_image: int) -> jax.Array:
  """[L, N_I] head-averaged attention of text queries on image keys (one layer, one example).
  Leading key columns beyond L (persistent tokens) are dropped."""
  length = text_mask_L.shape[0]
  mean_LxL = jnp.mean(probs_HxLxS[:, :, probs_HxLxS.shape[-1] - length:], axis=0)
  return _select(mean_LxL, text_mask_L, image_mask_L, n_image)


def reference_block(q_LxD: jax.Array, k_LxD: jax.Array, text_mask_L: jax.Array,
                    image_mask_L: jax.Array, token_mask_L: jax.Array, n_image: int
                    ) -> jax.Array:
  """[L, N_I] block of softmax_b(k_a . q_b / sqrt(D)) (rows: text keys a, columns: image
  queries b; normalised over the non-padding query positions b) for one layer and example."""
  ct = jnp.promote_types(q_LxD.dtype, jnp.float32)
  scores_LxL = (k_LxD.astype(ct) @ q_LxD.astype(ct).T) * q_LxD.shape[-1] ** -0.5
  scores_LxL = jnp.where(token_mask_L[None, :], scores_LxL, jnp.finfo(ct).min)
  return _select(jax.nn.softmax(scores_LxL, axis=-1), text_mask_L, image_mask_L, n_image)


def cross_modal_block(layers: Sequence[dict[str, jax.Array]], text_mask_L: jax.Array,
                      image_mask_L: jax.Array, token_mask_L: jax.Array, *, mode: str,
                      n_image: int, layer_ids: Sequence[int] | None = None) -> jax.Array:
  """Sum over layers (all, or `layer_ids`) of one example's per-layer blocks: [L, N_I].

  `layers` holds one example's captures: 'probs' [H, L, S] (text_to_image) or 'q', 'k'
  [L, H, K] (reference).
  """
  validation.one_of("mode", mode, MODES)
  chosen = range(len(layers)) if layer_ids is None else layer_ids
  total = None
  for i in chosen:
    cap = layers[i]
    if mode == "text_to_image":
      x = text_to_image_block(cap["probs"], text_mask_L, image_mask_L, n_image)
    else:
      q, k = (cap[n].reshape(cap[n].shape[0], -1) for n in ("q", "k"))  # merge heads
      x = reference_block(q, k, text_mask_L, image_mask_L, token_mask_L, n_image)
    total = x if total is None else total + x
  return total


def check_layer_ids(layer_ids: Sequence[int] | None, num_layers: int) -> tuple[int, ...] | None:
  if layer_ids is None:
    return None
  ids = tuple(int(i) for i in layer_ids)
  if not ids or any(not 0 <= i < num_layers for i in ids):
    raise ValueError(f"layers must list indices in [0, {num_layers}), got {layer_ids}")
  return ids
