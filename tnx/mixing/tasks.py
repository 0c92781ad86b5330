"""Classification domains for the paper's logistic-regression and neural-network experiments
(arXiv 2511.06913, Figs. 2-3), as Pools plus clean test sets.

Logistic (host-generated from an int seed): domain i draws x ~ N(0, C_i I_D),
y ~ Bernoulli(sigmoid(theta*^T x)) and flips each training/validation label with probability
rho_i; test labels are clean. The test metrics are expectations over the clean label given x
(p = sigmoid(theta*^T x)), which removes label-sampling noise from the comparison.

Digits: scikit-learn's bundled 8x8 digits (1797 images, offline), split into a clean test set
and K domains drawn from the same images' distribution; domain i replaces a fraction rho_i of its
training/validation labels by uniform random classes (the MNIST experiment's setting at CPU
scale; MNIST itself is not available offline).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tnx import validation
from tnx.mixing import pools as P
from tnx.mixing import weights as W


# --------------------------------------------------------------------------- logistic
def logistic_loss(theta: jax.Array, example: dict[str, jax.Array]) -> jax.Array:
  """Per-example log-loss softplus(z) - y z with z = theta^T x, y in {0, 1}."""
  z = example["x"] @ theta
  return jax.nn.softplus(z) - example["y"] * z


def logistic_domains(seed: int, *, d: int = 10, c: Sequence[float] = (1.0, 1.0),
                     flip: Sequence[float] = (0.1, 0.1), n_train: int = 2000, n_val: int = 500,
                     n_test: int = 2000, theta_scale: float = 3.0, dtype: Any = None
                     ) -> tuple[jax.Array, P.Pools, P.Pools, dict[str, jax.Array]]:
  """(theta* [D], train Pools, val Pools, test {'x': [K, T, D], 'p': [K, T]} with p the clean
  probability of y = 1), generated on the host from `seed`; flip rates lie in [0, 0.5)."""
  c = W.check_vector("c", c, positive=True)
  flip = np.asarray(flip, np.float64)
  if flip.shape != c.shape or np.any(~np.isfinite(flip)) or np.any(flip < 0) or \
      np.any(flip >= 0.5):
    raise ValueError(f"flip must have {len(c)} entries in [0, 0.5), got {flip.tolist()}")
  dtype = dtype or jnp.zeros(()).dtype
  k = len(c)
  rng = np.random.default_rng(seed)
  theta = theta_scale * rng.standard_normal(d) / np.sqrt(d)

  def draw(n, noisy):
    x = np.sqrt(c)[:, None, None] * rng.standard_normal((k, n, d))
    p = 1.0 / (1.0 + np.exp(-(x @ theta)))
    y = (rng.random((k, n)) < p).astype(np.float64)
    if noisy:
      y = np.where(rng.random((k, n)) < flip[:, None], 1.0 - y, y)
    return jnp.asarray(x, dtype), jnp.asarray(y, dtype), jnp.asarray(p, dtype)

  x, y, _ = draw(n_train, True)
  xv, yv, _ = draw(n_val, True)
  xt, _, pt = draw(n_test, False)
  counts = lambda n: jnp.full((k,), n, jnp.int32)
  return (jnp.asarray(theta, dtype), P.Pools({"x": x, "y": y}, counts(n_train)),
          P.Pools({"x": xv, "y": yv}, counts(n_val)), {"x": xt, "p": pt})


def logistic_test_metrics(theta: jax.Array, test: dict[str, jax.Array], pi_K: jax.Array
                          ) -> dict[str, jax.Array]:
  """Expected clean-label log-loss and accuracy on the pi-mixture of the test domains."""
  z = test["x"] @ theta
  p = test["p"]
  logloss = p * jax.nn.softplus(-z) + (1 - p) * jax.nn.softplus(z)
  acc = jnp.where(z > 0, p, 1 - p)
  return {"test_logloss": jnp.sum(pi_K * jnp.mean(logloss, axis=1)),
          "test_accuracy": jnp.sum(pi_K * jnp.mean(acc, axis=1))}


# --------------------------------------------------------------------------- digits MLP
class MLP(nnx.Module):
  """in -> hidden (ReLU) -> classes."""

  def __init__(self, d_in: int, hidden: int, classes: int, *, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(d_in, hidden, rngs=rngs)
    self.out = nnx.Linear(hidden, classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.out(jax.nn.relu(self.hidden(x)))


def cross_entropy(model: MLP, example: dict[str, jax.Array]) -> jax.Array:
  """Per-example softmax cross-entropy of an integer label."""
  logits = model(example["x"])
  return optax.softmax_cross_entropy_with_integer_labels(logits, example["y"])


def digits_domains(seed: int, *, noise: Sequence[float] = (0.0, 0.8), n_val: int = 100,
                   n_test: int = 397, dtype: Any = np.float32
                   ) -> tuple[P.Pools, P.Pools, dict[str, np.ndarray]]:
  """(train Pools, val Pools, clean test {'x': [T, 64], 'y': [T]}) from sklearn's digits.

  The images left after the test split are shuffled (seed) and cut into len(noise) equal
  domains; domain i's train and val labels are replaced by uniform random classes with
  probability noise[i]."""
  from sklearn.datasets import load_digits
  noise = np.asarray(noise, np.float64)
  if noise.ndim != 1 or noise.size == 0 or np.any(~np.isfinite(noise)) or \
      np.any(noise < 0) or np.any(noise > 1):
    raise ValueError(f"noise must list per-domain label-noise rates in [0, 1], got "
                     f"{noise.tolist()}")
  validation.positive_int("n_test", n_test)
  data = load_digits()
  x = (data.data / 16.0).astype(dtype)
  y = data.target.astype(np.int32)
  rng = np.random.default_rng(seed)
  perm = rng.permutation(len(y))
  test = {"x": x[perm[:n_test]], "y": y[perm[:n_test]]}
  rest = perm[n_test:]
  k = noise.size
  per = len(rest) // k
  domains = []
  for i in range(k):
    idx = rest[i * per:(i + 1) * per]
    yi = y[idx].copy()
    replace = rng.random(per) < noise[i]
    yi[replace] = rng.integers(0, 10, int(replace.sum()))
    domains.append({"x": x[idx], "y": yi})
  train, val = P.split(domains, n_val, seed=seed + 1)
  return P.from_domains(train, "train"), P.from_domains(val, "val"), test


def mlp_accuracy(model: MLP, test: dict[str, Any]) -> jax.Array:
  return jnp.mean(jnp.argmax(model(test["x"]), axis=-1) == test["y"])
