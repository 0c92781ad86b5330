"""Influence Distillation with a tnx language model: per-example losses and features, warm-up and
fine-tuning with tnx.train's pieces, evaluation, the selection baselines and a FLOP model.

Training uses `tnx.train.steps` (init_state_fn and the functional nnx train step),
`tnx.train.optim.make_optimizer` (AdamW with warm-up + cosine, clipping and the decay mask),
`tnx.train.data.batches` (grain) and `tnx.train.checkpoint.Checkpointer` (the warm-up state is
saved once; every fine-tuning run restores its parameters). Examples are the dicts of
`minitulu.encode`: inputs / targets / weights [N, L].

Dimension letters: N examples, L sequence, D model width, V vocabulary, M targets.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
from flax import nnx

from tnx import sharding as shd
from tnx.models.lm import LMConfig
from tnx.selection.influence import jvp, targets
from tnx.selection.influence.grads import example_mapper, safe_normalize
from tnx.train import checkpoint as ckpt_lib
from tnx.train import data as data_lib
from tnx.train import evaluate as eval_lib
from tnx.train import optim, steps

FIELDS = ("inputs", "targets", "weights")


class Rows:
  """Random-access source over the rows `idx` of an examples dict (for grain)."""

  def __init__(self, examples: dict[str, np.ndarray], idx: np.ndarray | None = None):
    self.examples = {k: np.asarray(examples[k]) for k in FIELDS}
    self.idx = np.arange(len(self.examples["inputs"])) if idx is None else np.asarray(idx)

  def __len__(self) -> int:
    return len(self.idx)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    j = self.idx[i]
    return {k: v[j] for k, v in self.examples.items()}


def example_loss(graphdef: Any, rest: Any):
  """(params, example) -> mean response-token NLL of one example (tnx.train.steps'
  token_losses on a batch of one)."""
  def loss(params, example):
    batch = {k: example[k][None] for k in FIELDS}
    total, weight, _ = steps.token_losses(graphdef, params, rest, batch)
    return total / jnp.maximum(weight, 1.0)
  return loss


class Trainer:
  """One compiled train step / eval for a model config and optimizer config (reused by every
  run with the same settings)."""

  def __init__(self, lm: LMConfig, opt: mlc.ConfigDict, total_steps: int):
    self.lm, self.opt, self.total_steps = lm, opt, total_steps
    self.mesh = shd.make_mesh()
    self.tx = optim.make_optimizer(opt, total_steps)
    self.schedule = optim.schedule(opt, total_steps)
    self.graphdef, _, _ = steps.abstract_model(lm, 0)
    self.batch_sharding = shd.data_sharding(self.mesh)
    self._step = jax.jit(steps.make_train_step(self.graphdef, self.tx, self.schedule),
                         donate_argnums=0)
    self._eval = jax.jit(steps.make_eval_step(self.graphdef))
    self._exact = jax.jit(self._exact_fn)
    self._opt_init = jax.jit(self.tx.init)

  def init(self, seed: int) -> dict[str, Any]:
    """A fresh train state (params from `seed`, zero optimizer state)."""
    init = steps.init_state_fn(self.lm, self.tx, seed)
    return jax.jit(init, out_shardings=shd.tree_shardings(jax.eval_shape(init), self.mesh))()

  def state_from(self, params: Any, rest: Any, seed: int) -> dict[str, Any]:
    """A train state starting at (a copy of) `params` with this trainer's fresh optimizer state
    (the train step donates its input, so the caller's params stay valid)."""
    params = jax.tree.map(jnp.copy, params)
    return {"params": params, "rest": rest, "opt_state": self._opt_init(params),
            "step": jnp.zeros((), jnp.int32),
            "rng": jax.random.key_data(jax.random.key(seed))}

  def train(self, state: dict[str, Any], examples: dict[str, np.ndarray],
            idx: np.ndarray | None, *, num_steps: int, batch: int, seed: int
            ) -> tuple[dict[str, Any], list[float]]:
    """`num_steps` steps on rows `idx` (all if None), shuffled and repeated by grain."""
    it = iter(data_lib.batches(Rows(examples, idx), batch, seed=seed))
    losses = []
    with jax.set_mesh(self.mesh):
      for _ in range(num_steps):
        state, m = self._step(state, shd.to_global(next(it), self.batch_sharding))
        losses.append(m["loss"])
    return state, [float(x) for x in jax.device_get(losses)]

  def _exact_fn(self, params, rest, batch):
    logits = nnx.merge(self.graphdef, params, rest)(batch["inputs"])
    ok = (jnp.argmax(logits, -1) == batch["targets"]) | (batch["weights"] <= 0)
    return jnp.all(ok, axis=-1)

  def evaluate(self, state: dict[str, Any], examples: dict[str, np.ndarray], batch: int
               ) -> dict[str, float]:
    """Response-token loss (tnx.train.evaluate) and exact match: every response byte argmax
    correct under teacher forcing, i.e. greedy decoding reproduces the response."""
    n = len(examples["inputs"]) // batch * batch
    chunks = [{k: np.asarray(examples[k][i:i + batch]) for k in FIELDS}
              for i in range(0, n, batch)]
    with jax.set_mesh(self.mesh):
      out = eval_lib.evaluate(self._eval, state["params"], state["rest"], chunks,
                              self.batch_sharding)
      exact = [np.asarray(self._exact(state["params"], state["rest"],
                                      shd.to_global(c, self.batch_sharding))) for c in chunks]
    return {"loss": out["loss"], "exact_match": float(np.concatenate(exact).mean())}


def save_state(state: dict[str, Any], directory: str) -> None:
  """The train state as a one-step orbax checkpoint (tnx.train.checkpoint)."""
  ck = ckpt_lib.Checkpointer(directory)
  ck.save(int(state["step"]), state, None, {"step": int(state["step"])})
  ck.close()


def restore_state(directory: str, like: dict[str, Any]) -> dict[str, Any]:
  """The latest checkpoint in `directory`, in the structure and shardings of `like`."""
  ck = ckpt_lib.Checkpointer(directory)
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        like)
  state, _ = ck.restore(None, target)
  ck.close()
  return state


class PoolFunctions:
  """The per-example functions of the selectors for one model configuration, compiled once and
  reused for every trained model of that configuration (pass each model's params)."""

  def __init__(self, graphdef: Any, params: Any, rest: Any, *, jvp_blocks: int,
               chunk_size: int = 64):
    self.loss = example_loss(graphdef, rest)
    self._losses = example_mapper(lambda p, e: self.loss(p, e), chunk_size=chunk_size)
    _, self.hidden_fn = jvp.lm_prefix_features(graphdef, params, rest, len(params["blocks"]),
                                               pooling="mean")
    self._hidden = example_mapper(lambda p, e: self.hidden_fn(p, e), chunk_size=chunk_size)
    self.jvp_blocks = jvp_blocks
    _, self.prefix_fn = jvp.lm_prefix_features(graphdef, params, rest, jvp_blocks)

  @staticmethod
  def rows(examples: dict[str, Any]) -> dict[str, jax.Array]:
    return {k: jnp.asarray(examples[k]) for k in FIELDS}

  def losses(self, params: Any, examples: dict[str, Any]) -> jax.Array:
    """[N] response-token NLL of every example."""
    return self._losses(params, self.rows(examples))

  def hidden_states(self, params: Any, examples: dict[str, Any]) -> jax.Array:
    """[N, D] mean-pooled last-layer hidden states (the embedding-similarity baseline's
    representation, like RDS+ on the warmed-up model)."""
    full = {"embed": params["embed"], "final_norm": params["final_norm"],
            "blocks": params["blocks"]}
    return self._hidden(full, self.rows(examples))

  def prefix(self, params: Any) -> Any:
    """The parameters the JVP features depend on (embedding, first blocks, final norm)."""
    keys = sorted(params["blocks"])[:self.jvp_blocks]
    return {"embed": params["embed"], "final_norm": params["final_norm"],
            "blocks": {b: params["blocks"][b] for b in keys}}


def perplexity_band(losses_N: np.ndarray, k: int, center: float = 0.5) -> np.ndarray:
  """The k examples whose loss ranks around the `center` quantile (Mid-PPL when 0.5)."""
  order = np.argsort(np.asarray(losses_N), kind="stable")
  n = order.size
  start = int(round(center * n - k / 2))
  start = min(max(start, 0), n - k)
  return order[start:start + k]


def similarity_selection(pool_NxD: jax.Array, target_MxD: jax.Array, k: int,
                         key: jax.Array) -> np.ndarray:
  """Round-robin over targets of the cosine similarity of embeddings."""
  sims = safe_normalize(pool_NxD) @ safe_normalize(target_MxD).T
  return targets.round_robin(sims, k, key)


def forward_flops(lm: LMConfig, seq_len: int, num_blocks: int | None = None) -> float:
  """Analytic forward FLOPs of one sequence: 2 * (matmul parameters) per token plus the
  attention scores and mixing (2 * 2 * L^2 * D per attention layer), for the first
  `num_blocks` blocks (all, plus the output head, when None)."""
  d, f, v, l = lm.d_model, lm.hidden, lm.vocab_size, seq_len
  blocks = lm.n_layers if num_blocks is None else num_blocks
  per_block = 2 * l * (4 * d * d + 3 * d * f) + 4 * l * l * d
  head = 2 * l * d * v if num_blocks is None else 0
  return float(blocks * per_block + head)
