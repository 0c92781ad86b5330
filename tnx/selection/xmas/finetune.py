"""Fine-tuning and evaluation of the vision-language model on (a subset of) a ShapesVQA pool.

Training reuses tnx.train: the optimizer (`optim.make_optimizer`), the pure train step
(`steps.make_train_step`: answer-token loss sum(w * nll) / sum(w)) and the orbax checkpointer
(`checkpoint.Checkpointer`). Batches are sharded over the (data, fsdp) axes of a tnx mesh when
the batch divides the device count. The last batch of an epoch is filled with weight-0 rows so
every step has the same shape (one compilation).

`train(..., checkpoint_dir=..., num_checkpoints=T + 1)` saves T + 1 evenly spaced checkpoints,
the first at step 0 (before any update) and the last after the final step: the proxy
checkpoints of XMAS (arXiv 2510.01454, section 4).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
from flax import nnx

from tnx import sharding as shd
from tnx import validation
from tnx.selection.xmas import model as model_lib
from tnx.train import checkpoint as ckpt_lib
from tnx.train import optim, steps


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Attributes:
    epochs: passes over the training indices. batch_size: B.
    lr: peak learning rate of Adam(W). warmup_steps: linear warmup.
    final_lr_ratio: cosine decay to lr * ratio at the last step (1 = constant lr).
    weight_decay: AdamW decay of matrices. clip: global-norm clip (0 = off).
  """
  epochs: int = 1
  batch_size: int = 64
  lr: float = 1e-3
  warmup_steps: int = 0
  final_lr_ratio: float = 1.0
  weight_decay: float = 0.0
  clip: float = 1.0

  def __post_init__(self):
    validation.positive_int("epochs", self.epochs)
    validation.positive_int("batch_size", self.batch_size)
    validation.positive("lr", self.lr)

  def opt(self) -> mlc.ConfigDict:
    """The tnx.train.optim config of this run."""
    return mlc.ConfigDict(dict(peak_lr=self.lr, warmup_steps=self.warmup_steps,
                               final_lr_ratio=self.final_lr_ratio, b1=0.9, b2=0.999, eps=1e-8,
                               weight_decay=self.weight_decay, no_decay=("embedding",),
                               clip=self.clip))


def checkpoint_steps(total_steps: int, num_checkpoints: int) -> list[int]:
  """`num_checkpoints` evenly spaced steps from 0 to `total_steps` (both ends included)."""
  total_steps = validation.positive_int("total_steps", total_steps)
  n = validation.positive_int("num_checkpoints", num_checkpoints)
  if n > total_steps + 1:
    raise ValueError(f"num_checkpoints={n} exceeds the {total_steps + 1} distinct steps "
                     f"0..{total_steps}")
  if n == 1:
    return [total_steps]
  return sorted({int(round(s)) for s in np.linspace(0, total_steps, n)})


def _batch(pool: dict[str, np.ndarray], idx: np.ndarray, valid: np.ndarray) -> dict[str, Any]:
  return {"inputs": {"tokens": pool["tokens"][idx], "image": pool["image"][idx]},
          "targets": pool["targets"][idx],
          "weights": np.where(valid[:, None], pool["weights"][idx], 0.0).astype(np.float32)}


def epoch_batches(n: int, batch_size: int, rng: np.random.Generator
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
  """Shuffled (positions [B], valid [B]) over range(n); the last batch is padded."""
  order = rng.permutation(n)
  out = []
  for start in range(0, n, batch_size):
    idx = order[start: start + batch_size]
    valid = np.ones(batch_size, bool)
    if len(idx) < batch_size:
      valid[len(idx):] = False
      idx = np.concatenate([idx, order[: batch_size - len(idx)]])
    out.append((idx, valid))
  return out


def batch_sharding(mesh: Any, batch_size: int) -> Any:
  """Batch sharding over (data, fsdp) when it divides the batch, else None (one device)."""
  if mesh is None:
    return None
  devices = mesh.shape[shd.DATA] * mesh.shape[shd.FSDP]
  return shd.named(mesh, (shd.DATA, shd.FSDP)) if batch_size % devices == 0 else None


def put(tree: Any, sharding: Any) -> Any:
  return jax.tree.map(lambda x: jax.device_put(x, sharding) if sharding is not None
                      else jnp.asarray(x), tree)


@dataclasses.dataclass
class Trained:
  """graphdef + params/rest pure dicts of a trained model, its training losses per step, and
  (proxy runs) the checkpoint directory and steps."""
  graphdef: Any
  params: Any
  rest: Any
  losses: list[float]
  checkpoint_dir: str | None = None
  checkpoint_steps: list[int] = dataclasses.field(default_factory=list)

  def model(self) -> model_lib.VisionLanguageModel:
    return nnx.merge(self.graphdef, self.params, self.rest)


def _constant_lr(tc: TrainConfig) -> bool:
  return tc.warmup_steps == 0 and tc.final_lr_ratio == 1.0


def _compiled(cfg: model_lib.VLMConfig, tc: TrainConfig, total: int) -> tuple[Any, ...]:
  """(graphdef, optimizer, jitted train step, jitted state init), shared by every run of the
  same model and optimizer (with a constant learning rate the step does not depend on the
  run length), so many subset trainings compile once."""
  return _compiled_for(cfg, tc, 1 if _constant_lr(tc) else total)


@functools.lru_cache(maxsize=16)
def _compiled_for(cfg: model_lib.VLMConfig, tc: TrainConfig, total: int):
  tx = optim.make_optimizer(tc.opt(), total)
  graphdef = nnx.split(nnx.eval_shape(lambda: model_lib.build(cfg, 0)), nnx.Param, ...)[0]
  step = steps.make_train_step(graphdef, tx, optim.schedule(tc.opt(), total))
  init = jax.jit(lambda key: init_state(cfg, key, tx)[1])
  return graphdef, tx, jax.jit(step, donate_argnums=0), init


def init_state(cfg: model_lib.VLMConfig, key: jax.Array, tx: Any
               ) -> tuple[Any, dict[str, Any]]:
  """(graphdef, train state) of a fresh model initialised from `key` (jit-friendly)."""
  graphdef, params, rest = nnx.split(model_lib.VisionLanguageModel(cfg, rngs=nnx.Rngs(key)),
                                     nnx.Param, ...)
  params = nnx.to_pure_dict(params)
  return graphdef, {"params": params, "rest": nnx.to_pure_dict(rest),
                    "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32),
                    "rng": jax.random.key_data(key)}


def train(cfg: model_lib.VLMConfig, pool: dict[str, np.ndarray], indices: np.ndarray,
          seed: int, tc: TrainConfig, *, mesh: Any = None, checkpoint_dir: str | None = None,
          num_checkpoints: int = 0, init_params: Any = None) -> Trained:
  """Trains a model on rows `indices` of `pool` for `tc.epochs` epochs (data order from
  `seed`), starting from `init_params` (e.g. a stage-1 alignment run's params, with a fresh
  optimizer) or from a fresh initialisation with `seed`. With `checkpoint_dir`, saves
  `num_checkpoints` evenly spaced checkpoints (see `checkpoint_steps`) through
  tnx.train.checkpoint.Checkpointer."""
  indices = np.asarray(indices)
  if indices.ndim != 1 or len(indices) == 0:
    raise ValueError(f"indices must be a non-empty 1-D array, got shape {indices.shape}")
  per_epoch = math.ceil(len(indices) / tc.batch_size)
  total = per_epoch * tc.epochs
  graphdef, tx, step_fn, init_fn = _compiled(cfg, tc, total)
  state = init_fn(jax.random.key(seed))
  if init_params is not None:
    if jax.tree.structure(init_params) != jax.tree.structure(state["params"]):
      raise ValueError("init_params must have the parameter structure of the model `cfg`")
    # A copy: the train step donates its state, and `init_params` may serve other runs.
    state["params"] = jax.tree.map(lambda x: jnp.array(x, copy=True), init_params)
  sharding = batch_sharding(mesh, tc.batch_size)
  if sharding is not None:   # replicated like the step's outputs: one compilation
    state = jax.device_put(state, shd.named(mesh))
  save_at, ckpt = set(), None
  if checkpoint_dir is not None:
    save_at = set(checkpoint_steps(total, validation.positive_int("num_checkpoints",
                                                                  num_checkpoints)))
    ckpt = ckpt_lib.Checkpointer(checkpoint_dir, retention=ckpt_lib.Retention(
        keep_last=len(save_at)), async_save=False)
  meta = {"model": dataclasses.asdict(cfg), "train": dataclasses.asdict(tc), "seed": seed}
  rng = np.random.default_rng(seed)
  losses, step = [], 0
  if 0 in save_at:
    ckpt.save(0, state, None, meta)
  for _ in range(tc.epochs):
    for pos, valid in epoch_batches(len(indices), tc.batch_size, rng):
      batch = put(_batch(pool, indices[pos], valid), sharding)
      state, metrics = step_fn(state, batch)
      step += 1
      losses.append(float(metrics["loss"]))
      if not math.isfinite(losses[-1]):
        raise FloatingPointError(f"non-finite training loss at step {step}")
      if step in save_at:
        ckpt.save(step, state, None, meta)
  if ckpt is not None:
    ckpt.close()
  return Trained(graphdef, state["params"], state["rest"], losses, checkpoint_dir,
                 sorted(save_at))


def load_checkpoints(trained: Trained, cfg: model_lib.VLMConfig, tc: TrainConfig
                     ) -> list[tuple[Any, Any]]:
  """(params, rest) of every checkpoint of a proxy run, oldest first (checksums verified)."""
  if trained.checkpoint_dir is None:
    raise ValueError("the run saved no checkpoints (train(..., checkpoint_dir=None))")
  total = max(trained.checkpoint_steps)
  tx = optim.make_optimizer(tc.opt(), max(total, 1))
  abstract = jax.eval_shape(lambda: init_state(cfg, jax.random.key(0), tx)[1])
  ckpt = ckpt_lib.Checkpointer(trained.checkpoint_dir, create=False)
  try:
    out = []
    for s in trained.checkpoint_steps:
      restored, _ = ckpt.restore(s, abstract)
      out.append((restored["params"], restored["rest"]))
  finally:
    ckpt.close()
  return out


@functools.partial(jax.jit, static_argnums=0)
def _correct(graphdef, params, rest, batch):
  logits = nnx.merge(graphdef, params, rest)(batch["inputs"])
  hit = jnp.argmax(logits, -1) == batch["targets"]
  return jnp.all(jnp.where(batch["weights"] > 0, hit, True), axis=1)   # every answer token


def accuracy_per_family(trained: Trained, data: dict[str, np.ndarray], num_families: int, *,
                        batch_size: int = 256, mesh: Any = None) -> np.ndarray:
  """[num_families] accuracy on `data`: an item counts when the argmax of every answer
  token is right."""
  n = len(data["tokens"])
  sharding = batch_sharding(mesh, batch_size)
  correct = np.zeros(n, bool)
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size) % n
    valid = np.arange(start, start + batch_size) < n
    batch = put(_batch(data, idx, valid), sharding)
    hit = np.asarray(_correct(trained.graphdef, trained.params, trained.rest, batch))
    correct[idx[valid]] = hit[valid]
  fam = data["family"]
  return np.asarray([correct[fam == f].mean() if np.any(fam == f) else np.nan
                     for f in range(num_families)])
