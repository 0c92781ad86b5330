"""Two-layer classifier trained on (synthetic) embeddings, and the generic training loop.

Dimension letters: N examples, D input dim, H hidden width, C classes.

Early stopping uses a validation split carved out of the *training* data passed in (for the
DP pipeline that is synthetic data), never private or test data.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tnx import validation


class TwoLayerMLP(nnx.Module):
  """logits = W2 act(W1 x + b1) + b2 with ReLU or GELU."""

  def __init__(self, in_dim: int, hidden: int, num_classes: int, *, act: str = "relu",
               rngs: nnx.Rngs):
    validation.one_of("act", act, ("relu", "gelu"))
    self.l1 = nnx.Linear(in_dim, hidden, rngs=rngs)
    self.l2 = nnx.Linear(hidden, num_classes, rngs=rngs)
    self.act = act

  def __call__(self, x_NxD: jax.Array) -> jax.Array:
    h = self.l1(x_NxD)
    h = jax.nn.relu(h) if self.act == "relu" else jax.nn.gelu(h)
    return self.l2(h)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation settings (spec defaults: Adam 1e-3, 50 epochs, batch 256)."""
  epochs: int = 50
  batch_size: int = 256
  learning_rate: float = 1e-3
  val_fraction: float = 0.1   # held out of the training data for early stopping
  patience: int = 10          # epochs without validation improvement before stopping
  seed: int = 0


@functools.partial(jax.jit, static_argnames="graphdef", donate_argnames="state")
def _train_epoch(graphdef, state, x_SxBxD: jax.Array, y_SxB: jax.Array):
  """One epoch of Adam steps (lax.scan over S batches) on the split (model, optimizer)."""

  def step(state, batch):
    model, optimizer = nnx.merge(graphdef, state)
    x, y = batch

    def loss_fn(m):
      return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), loss

  return jax.lax.scan(step, state, (x_SxBxD, y_SxB))


@nnx.jit
def _predict(model: nnx.Module, x: jax.Array) -> jax.Array:
  return jnp.argmax(model(x), axis=-1)


def accuracy(model: nnx.Module, x_NxD: jax.Array, y_N: jax.Array) -> float:
  """Top-1 accuracy of `model` (any module mapping [N, D] to [N, C] logits)."""
  x = jnp.asarray(x_NxD)
  pred = np.asarray(_predict(model, x))
  return float(np.mean(pred == np.asarray(y_N)))


def fit(model: nnx.Module, x_NxD: jax.Array, y_N: jax.Array,
        config: TrainConfig = TrainConfig()) -> dict[str, float]:
  """Trains `model` in place with Adam and early stopping on a split of (x, y).

  Returns:
    {'val_accuracy': best validation accuracy, 'epochs': epochs run}.
  """
  x = np.asarray(x_NxD)
  y = np.asarray(y_N)
  validation.shape("x", x, (None, None))
  validation.shape("y", y, (x.shape[0],))
  validation.positive_int("config.epochs", config.epochs)
  validation.positive_int("config.batch_size", config.batch_size)
  validation.in_range("config.val_fraction", config.val_fraction, 0.0, 1.0, high_open=True)
  rng = np.random.default_rng(config.seed)
  perm = rng.permutation(len(y))
  n_val = int(config.val_fraction * len(y))
  val, tr = perm[:n_val], perm[n_val:]
  if len(tr) == 0:
    raise ValueError(f"need at least one training example after the validation split, "
                     f"got {len(y)} examples and val_fraction={config.val_fraction}")
  optimizer = nnx.Optimizer(model, optax.adam(config.learning_rate), wrt=nnx.Param)
  bs = min(config.batch_size, len(tr))
  best, best_state, since, epochs_run = -1.0, None, 0, 0
  graphdef, state = nnx.split((model, optimizer))
  steps = len(tr) // bs                  # full batches only: one compiled shape
  for epoch in range(1, config.epochs + 1):
    epochs_run = epoch
    order = tr[rng.permutation(len(tr))][: steps * bs].reshape(steps, bs)
    state, _ = _train_epoch(graphdef, state, jnp.asarray(x[order]), jnp.asarray(y[order]))
    nnx.update((model, optimizer), state)
    if n_val == 0:
      continue
    acc = accuracy(model, x[val], y[val])
    if acc > best:
      best, best_state, since = acc, jax.tree.map(jnp.copy, nnx.state(model)), 0
    else:
      since += 1
      if since >= config.patience:
        break
  if best_state is not None:
    nnx.update(model, best_state)
  return {"val_accuracy": best, "epochs": float(epochs_run)}


def train_probe(x_NxD: jax.Array, y_N: jax.Array, num_classes: int, hidden: int = 1024,
                config: TrainConfig = TrainConfig(), act: str = "relu") -> TwoLayerMLP:
  """Builds and trains the two-layer probe on (x, y); returns the trained model."""
  num_classes = validation.positive_int("num_classes", num_classes)
  hidden = validation.positive_int("hidden", hidden)
  x = jnp.asarray(x_NxD)
  model = TwoLayerMLP(x.shape[-1], hidden, num_classes, act=act,
                      rngs=nnx.Rngs(params=config.seed))
  fit(model, x, y_N, config)
  return model
