"""Moment matching: fit a type mixture to (noisy) pair statistics (arXiv 2506.23855, Sec. 5).

The statistics are week-agnostic averages, so the same target is used for every week
(single, within) and every consecutive week pair (across); absent pairs are target 0. The
query list has |O| W single, C(|O|, 2) W within and |O|^2 (W - 1) across queries, and the
loss is mean_q weight_q (m_q(theta) - target_q)^2 over a minibatch, m_q the closed-form
mixture marginal (`model.pair_marginals`), minimised with optax Adam over shuffled passes
("epochs") through the queries.

Defaults are the released code's settings (T = 500 types, batch 8,192, 2,000 passes, Adam with
learning rate 1.0, seed 0, unit weights). Initial logits are Gaussian with std 0.001, which is
what the released code effectively uses (its command-line std of 0.1 is not passed on).
Per-family weights are an addition (all 1 reproduces the paper's loss).

Dimension letters: Q queries, B batch, T types, W weeks, K slots, O topics.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tnx import validation
from tnx.privacy.topics import model
from tnx.privacy.topics.stats import TopicStatistics


@dataclasses.dataclass(frozen=True)
class FitConfig:
  num_types: int = 500            # T
  num_slots: int = 5              # K (k of the API)
  batch_size: int = 8192          # queries per step
  num_epochs: int = 2000          # passes over the shuffled queries
  learning_rate: float = 1.0      # Adam
  init_std: float = 0.001         # std of the Gaussian initial logits
  seed: int = 0
  single_weight: float = 1.0      # loss weight of each family (paper: all 1)
  within_weight: float = 1.0
  across_weight: float = 1.0
  dtype: str = "float32"

  def __post_init__(self):
    for f in ("num_types", "num_slots", "batch_size", "num_epochs"):
      validation.positive_int(f, getattr(self, f))
    validation.positive("learning_rate", self.learning_rate)
    validation.positive("init_std", self.init_std)
    for f in ("single_weight", "within_weight", "across_weight"):
      validation.non_negative(f, getattr(self, f))
    validation.one_of("dtype", self.dtype, ("float32", "float64"))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Queries:
  """weeks_Qx2 / topics_Qx2: (w0, w1) and (a, b) of each query; targets_Q; weights_Q."""
  weeks_Qx2: jax.Array
  topics_Qx2: jax.Array
  targets_Q: jax.Array
  weights_Q: jax.Array

  def __len__(self) -> int:
    return self.targets_Q.shape[0]


def build_queries(stats: TopicStatistics, num_weeks: int, weights=(1.0, 1.0, 1.0),
                  dtype=np.float32) -> Queries:
  """All single, within (a < b) and consecutive-week across queries for `num_weeks` weeks."""
  num_weeks = validation.positive_int("num_weeks", num_weeks)
  if num_weeks < 2:
    raise ValueError(f"num_weeks must be >= 2 for across-week queries, got {num_weeks}")
  o = stats.num_topics
  ia, ib = np.triu_indices(o, 1)
  ga, gb = (g.ravel() for g in np.meshgrid(np.arange(o), np.arange(o), indexing="ij"))
  fams = [(np.arange(o), np.arange(o), stats.single_O, 0, num_weeks, weights[0]),
          (ia, ib, stats.within_OxO[ia, ib], 0, num_weeks, weights[1]),
          (ga, gb, stats.across_OxO[ga, gb], 1, num_weeks - 1, weights[2])]
  weeks, topics, targets, wts = [], [], [], []
  for a, b, target, lag, count, weight in fams:
    for w in range(count):
      weeks.append(np.broadcast_to([w, w + lag], (a.size, 2)))
      topics.append(np.stack([a, b], axis=1))
      targets.append(target)
      wts.append(np.full(a.size, weight))
  cat = lambda xs, dt: np.concatenate(xs).astype(dt)
  return Queries(cat(weeks, np.int32), cat(topics, np.int32), cat(targets, dtype),
                 cat(wts, dtype))


def _batch_loss(mixture: model.TypeMixture, q: Queries, mask_B: jax.Array) -> jax.Array:
  err = model.pair_marginals(mixture, q.weeks_Qx2, q.topics_Qx2) - q.targets_Q
  return jnp.sum(jnp.where(mask_B, q.weights_Q * err ** 2, 0.0)) / jnp.maximum(mask_B.sum(), 1)


def query_loss(mixture: model.TypeMixture, queries: Queries, batch_size: int = 8192) -> float:
  """The loss over all queries (mean of weight * squared error), evaluated in batches."""
  total = 0.0
  for i in range(0, len(queries), batch_size):
    q = jax.tree.map(lambda x: x[i:i + batch_size], queries)
    total += float(_batch_loss(mixture, q, jnp.ones(len(q), bool))) * len(q)
  return total / len(queries)


@dataclasses.dataclass(frozen=True)
class FitResult:
  mixture: model.TypeMixture
  epoch_losses: np.ndarray      # mean minibatch loss of each pass
  seconds_per_epoch: float      # after the first (compiling) group of passes; nan if none


@functools.lru_cache(maxsize=16)
def _adam(learning_rate: float) -> optax.GradientTransformation:
  return optax.adam(learning_rate)   # one object per rate, so `_epoch` compiles once per rate


@functools.partial(jax.jit, static_argnames=("tx", "batch_size", "num_epochs"))
def _epochs(mixture, opt_state, key, first_epoch, queries: Queries, *, tx, batch_size: int,
            num_epochs: int):
  """`num_epochs` shuffled passes (pass e shuffled with fold_in(key, e)); mean loss of each."""
  n = len(queries)
  num_batches = -(-n // batch_size)
  fill = jnp.full((num_batches * batch_size - n,), -1, jnp.int32)

  def step(carry, idx_B):
    mixture, opt_state = carry
    mask = idx_B >= 0
    q = jax.tree.map(lambda x: jnp.take(x, jnp.maximum(idx_B, 0), axis=0), queries)
    loss, grads = jax.value_and_grad(_batch_loss)(mixture, q, mask)
    updates, opt_state = tx.update(grads, opt_state, mixture)
    return (optax.apply_updates(mixture, updates), opt_state), loss

  def epoch(carry, e):
    order = jnp.concatenate([jax.random.permutation(jax.random.fold_in(key, e), n), fill])
    carry, losses = jax.lax.scan(step, carry, order.reshape(num_batches, batch_size))
    return carry, jnp.mean(losses)

  epochs = first_epoch + jnp.arange(num_epochs)
  (mixture, opt_state), losses = jax.lax.scan(epoch, (mixture, opt_state), epochs)
  return mixture, opt_state, losses


def fit_mixture(stats: TopicStatistics, num_weeks: int, cfg: FitConfig,
                on_epoch: Callable[[int, float], None] | None = None,
                init: model.TypeMixture | None = None, epochs_per_call: int = 50
                ) -> FitResult:
  """Fits a T-type mixture over `num_weeks` weeks to `stats` by minibatch moment matching.

  Passes run `epochs_per_call` at a time inside one jitted scan; `on_epoch(epoch, loss)` is
  called for each after its group finishes.
  """
  dtype = jnp.dtype(cfg.dtype)
  queries = build_queries(stats, num_weeks,
                          (cfg.single_weight, cfg.within_weight, cfg.across_weight), dtype)
  key = jax.random.PRNGKey(cfg.seed)
  k_init, key = jax.random.split(key)
  mixture = init or model.init_mixture(k_init, cfg.num_types, num_weeks, cfg.num_slots,
                                       stats.num_topics, cfg.init_std, dtype)
  tx = _adam(cfg.learning_rate)
  opt_state = tx.init(mixture)
  queries = jax.tree.map(jnp.asarray, queries)
  batch = min(cfg.batch_size, len(queries))
  group = validation.positive_int("epochs_per_call", epochs_per_call)
  losses, timed, t_start = [], 0, None
  for first in range(0, cfg.num_epochs, group):
    count = min(group, cfg.num_epochs - first)
    mixture, opt_state, got = _epochs(mixture, opt_state, key, first, queries, tx=tx,
                                      batch_size=batch, num_epochs=count)
    got = np.asarray(got).tolist()
    if t_start is None:
      t_start = time.perf_counter()            # the first group includes compilation
    else:
      timed += count
    for e, loss in enumerate(got, start=first):
      if not np.isfinite(loss):
        raise FloatingPointError(f"fit diverged: loss {loss} at pass {e} (lower "
                                 f"learning_rate={cfg.learning_rate})")
      if on_epoch is not None:
        on_epoch(e, loss)
    losses += got
  per_epoch = (time.perf_counter() - t_start) / timed if timed else math.nan
  return FitResult(mixture, np.asarray(losses), per_epoch)
