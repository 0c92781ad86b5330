"""Public encoders mapping inputs to embeddings on the unit sphere (R = 1).

An encoder is any callable `[N, F] -> [N, D]`; the DP pipeline only needs its output rows to
have norm <= R. Encoders here are fitted on *public* data only and then frozen:

* `train_mlp_encoder`: a small Flax MLP trained as a classifier on the public split; the
  embedding is its L2-normalised penultimate layer (the stand-in for a pretrained encoder).
* `fit_pca_encoder`: PCA fitted on the public split, then L2 normalisation.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from sklearn import decomposition

from tnx import validation
from tnx.privacy import classifier, data

Encoder = Callable[[jax.Array], jax.Array]


class MLPEncoder(nnx.Module):
  """x -> tanh(W2 relu(W1 x)) in R^D (`embed`), plus a linear class head (`__call__`)."""

  def __init__(self, in_dim: int, hidden: int, dim: int, num_classes: int, *,
               rngs: nnx.Rngs):
    self.l1 = nnx.Linear(in_dim, hidden, rngs=rngs)
    self.l2 = nnx.Linear(hidden, dim, rngs=rngs)
    self.head = nnx.Linear(dim, num_classes, rngs=rngs)

  def embed(self, x_NxF: jax.Array) -> jax.Array:
    return jnp.tanh(self.l2(jax.nn.relu(self.l1(x_NxF))))

  def __call__(self, x_NxF: jax.Array) -> jax.Array:
    return self.head(self.embed(x_NxF))


def train_mlp_encoder(x_pub_NxF: np.ndarray, y_pub_N: np.ndarray, num_classes: int,
                      dim: int = 16, hidden: int = 128,
                      config: classifier.TrainConfig | None = None) -> Encoder:
  """Trains an `MLPEncoder` on public data; returns x -> normalised embedding [N, dim]."""
  dim = validation.positive_int("dim", dim)
  config = classifier.TrainConfig(epochs=200) if config is None else config
  x = np.asarray(x_pub_NxF)
  validation.shape("x_pub", x, (None, None))
  model = MLPEncoder(x.shape[1], hidden, dim, num_classes, rngs=nnx.Rngs(params=config.seed))
  classifier.fit(model, x, y_pub_N, config)
  embed = nnx.jit(lambda m, v: data.normalize_rows(m.embed(v)))
  return lambda x_NxF: embed(model, jnp.asarray(x_NxF))


def fit_pca_encoder(x_pub_NxF: np.ndarray, dim: int = 16, seed: int = 0) -> Encoder:
  """PCA on public data followed by L2 normalisation; returns x -> [N, dim]."""
  dim = validation.positive_int("dim", dim)
  pca = decomposition.PCA(n_components=dim, random_state=seed).fit(np.asarray(x_pub_NxF))
  mean = jnp.asarray(pca.mean_)
  comps = jnp.asarray(pca.components_.T)
  return lambda x_NxF: data.normalize_rows((jnp.asarray(x_NxF) - mean) @ comps)
