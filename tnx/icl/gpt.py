"""A small GPT-style transformer for in-context weight prediction with test-time CoT
(arXiv 2510.03605, the GPT-2 experiments of section 5).

Tokens are continuous: x_i in R^d and y_i zero-padded to R^d, interleaved, then the current
weight-estimate tokens. A learned linear map R^d -> R^D reads every token in, a learned type
embedding (feature / label / estimate; tnx's choice, the blocks use RoPE rather than GPT-2's
learned absolute positions) is added, pre-norm blocks of `tnx.models.lm.Block` (causal RoPE
attention from `tnx.nn.attention`, gated MLP and RMSNorm from `tnx.nn.layers`) mix them, and a
learned linear map R^D -> R^d reads the prediction out at the last position. CoT appends the
prediction as a new estimate token and runs again (`cot`): a fixed buffer of 2n + 1 + k tokens
whose future slots the causal mask hides.

Training (`train_step`) on fresh prompts. Whether the paper trained its GPT-2 with or without
CoT is not stated; the options, recorded in every result, are:
  start='zero'     w_0 = 0, as the LSA analysis (nothing makes the net an iteration later);
  start='random'   w_0 ~ N(0, start_scale^2 I), so the net learns to refine any estimate;
  train_cot=T      T estimate tokens per training prompt: w_0, then the model's own
                   (stop-gradient) predictions; the loss is taken at every estimate position.
Dimension letters: B prompts, N examples, T estimate tokens, L = 2N + T tokens, D model width.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tnx import validation
from tnx.icl.task import Prompts
from tnx.models.config import LMConfig
from tnx.models.lm import Block
from tnx.nn.layers import RMSNorm, dtype_of, linear

FEATURE, LABEL, ESTIMATE = 0, 1, 2
STARTS = ("zero", "random")


@dataclasses.dataclass(frozen=True)
class GPTConfig:
  """d: feature dim; d_model, n_layers, n_heads, mlp_hidden (0 = 8/3 D): the transformer;
  dtype: compute dtype name."""

  d: int = 5
  d_model: int = 64
  n_layers: int = 4
  n_heads: int = 4
  mlp_hidden: int = 0
  rope_base: float = 10000.0
  dtype: str = "float32"

  def __post_init__(self):
    for name in ("d", "d_model", "n_layers", "n_heads"):
      validation.positive_int(name, getattr(self, name))
    validation.non_negative_int("mlp_hidden", self.mlp_hidden)
    dtype_of(self.dtype)

  def block_config(self) -> LMConfig:
    return LMConfig(vocab_size=1, d_model=self.d_model, n_layers=self.n_layers,
                    n_heads=self.n_heads, mlp_hidden=self.mlp_hidden, mixers=("attention",),
                    n_persistent=0, rope_base=self.rope_base, dtype=self.dtype)


class ICLTransformer(nnx.Module):
  """`model(tokens_BxLxd, types_L) -> predictions_BxLxd` (read out at every position)."""

  def __init__(self, cfg: GPTConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dt = dtype_of(cfg.dtype)
    block_cfg = cfg.block_config()
    self.read_in = linear(cfg.d, cfg.d_model, dtype=dt, rngs=rngs, use_bias=True)
    self.type_embed = nnx.Param(
        0.02 * jax.random.normal(rngs.params(), (3, cfg.d_model), jnp.float32))
    self.blocks = nnx.List([Block(block_cfg, i, rngs=rngs) for i in range(cfg.n_layers)])
    self.final_norm = RMSNorm(cfg.d_model, dtype=dt)
    self.read_out = linear(cfg.d_model, cfg.d, dtype=dt, rngs=rngs, use_bias=True)

  def __call__(self, tokens_BxLxd: jax.Array, types_L: jax.Array) -> jax.Array:
    if tokens_BxLxd.ndim != 3 or tokens_BxLxd.shape[-1] != self.cfg.d:
      raise ValueError(f"tokens_BxLxd must be [B, L, {self.cfg.d}], got "
                       f"{list(tokens_BxLxd.shape)}")
    dt = dtype_of(self.cfg.dtype)
    h_BxLxD = self.read_in(tokens_BxLxd.astype(dt))
    h_BxLxD = h_BxLxD + self.type_embed[...][types_L].astype(dt)[None]
    for block in self.blocks:
      h_BxLxD = block(h_BxLxD)
    return self.read_out(self.final_norm(h_BxLxD)).astype(jnp.float32)


def sequence(x_BxNxD: jax.Array, y_BxN: jax.Array, est_BxTxD: jax.Array
             ) -> tuple[jax.Array, jax.Array]:
  """Tokens [B, 2N + T, d] = (x_1, y_1, ..., x_N, y_N, est_1..est_T) and their types."""
  b, n, d = x_BxNxD.shape
  y_tok = jnp.zeros_like(x_BxNxD).at[..., 0].set(y_BxN)
  data_BxLxD = jnp.stack([x_BxNxD, y_tok], 2).reshape(b, 2 * n, d)
  tokens = jnp.concatenate([data_BxLxD, est_BxTxD.astype(x_BxNxD.dtype)], 1)
  types = jnp.concatenate([jnp.tile(jnp.array([FEATURE, LABEL]), n),
                           jnp.full((est_BxTxD.shape[1],), ESTIMATE)])
  return tokens, types


def start_estimates(key: jax.Array, w_BxD: jax.Array, start: str, scale: float) -> jax.Array:
  """w_0: zeros ('zero') or N(0, scale^2 I) ('random')."""
  validation.one_of("start", start, STARTS)
  if start == "zero":
    return jnp.zeros_like(w_BxD)
  return scale * jax.random.normal(key, w_BxD.shape, w_BxD.dtype)


@functools.partial(jax.jit, static_argnames="k")
def cot(model: ICLTransformer, x_BxNxD: jax.Array, y_BxN: jax.Array, w0_BxD: jax.Array,
        k: int) -> jax.Array:
  """k CoT steps (append the prediction, run again); the estimates w_1..w_k, [B, k, d]."""
  k = validation.positive_int("k", k)
  b, n, d = x_BxNxD.shape
  buf = jnp.concatenate([w0_BxD[:, None], jnp.zeros((b, k, d), w0_BxD.dtype)], 1)
  tokens, types = sequence(x_BxNxD, y_BxN, buf)
  graphdef, state = nnx.split(model)

  def step(tokens, i):
    out_BxD = nnx.merge(graphdef, state)(tokens, types)[:, 2 * n + i]
    tokens = jax.lax.dynamic_update_slice_in_dim(
        tokens, out_BxD[:, None].astype(tokens.dtype), 2 * n + i + 1, 1)
    return tokens, out_BxD

  _, est_KxBxD = jax.lax.scan(step, tokens, jnp.arange(k))
  return est_KxBxD.transpose(1, 0, 2)


def chain_loss(model: ICLTransformer, prompts: Prompts, w0_BxD: jax.Array, train_cot: int
               ) -> jax.Array:
  """Mean over the T = train_cot estimate positions of ||prediction - w||^2 / d; the estimate
  tokens after w_0 are the model's own predictions with gradients stopped."""
  x, y, w = prompts
  n = x.shape[1]
  if train_cot > 1:
    chain = jax.lax.stop_gradient(cot(model, x, y, w0_BxD, train_cot - 1))
    est = jnp.concatenate([w0_BxD[:, None], chain], 1)
  else:
    est = w0_BxD[:, None]
  tokens, types = sequence(x, y, est)
  pred_BxTxD = model(tokens, types)[:, 2 * n:]
  return jnp.mean((pred_BxTxD - w[:, None]) ** 2)


@dataclasses.dataclass(frozen=True)
class GPTTrainOptions:
  """n: training context; batch; start, start_scale, train_cot: see the module docstring."""

  n: int = 10
  batch: int = 64
  start: str = "random"
  start_scale: float = 1.0
  train_cot: int = 1

  def __post_init__(self):
    validation.positive_int("n", self.n)
    validation.positive_int("batch", self.batch)
    validation.one_of("start", self.start, STARTS)
    validation.positive("start_scale", self.start_scale)
    validation.positive_int("train_cot", self.train_cot)


def make_train_step(model: ICLTransformer, tx: optax.GradientTransformation,
                    sampler: Callable[[jax.Array, int, int], Prompts], opts: GPTTrainOptions):
  """(state, opt_state, step_fn): step_fn(state, opt_state, key) -> (state, opt_state, loss),
  jitted, functional (nnx.split / merge), with a fresh prompt batch per call."""
  graphdef, state = nnx.split(model)
  opt_state = tx.init(state)

  def loss_fn(state, key):
    kp, k0 = jax.random.split(key)
    prompts = sampler(kp, opts.batch, opts.n)
    w0 = start_estimates(k0, prompts.w_BxD, opts.start, opts.start_scale)
    return chain_loss(nnx.merge(graphdef, state), prompts, w0, opts.train_cot)

  @jax.jit
  def step_fn(state, opt_state, key):
    loss, grads = jax.value_and_grad(loss_fn)(state, key)
    updates, opt_state = tx.update(grads, opt_state, state)
    return optax.apply_updates(state, updates), opt_state, loss

  return state, opt_state, step_fn, graphdef


def error_curve(model: ICLTransformer, prompts: Prompts, w0_BxD: jax.Array, k: int
                ) -> tuple[np.ndarray, np.ndarray]:
  """Mean and standard error over prompts of ||w_i - w||^2, i = 1..k, [k] each."""
  est = cot(model, prompts.x_BxNxD, prompts.y_BxN, w0_BxD, k=k)
  err_BxK = np.asarray(jnp.sum((est - prompts.w_BxD[:, None]) ** 2, -1), np.float64)
  return err_BxK.mean(0), err_BxK.std(0, ddof=1) / np.sqrt(len(err_BxK))


def param_count(model: nnx.Module) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))))


def train(model: ICLTransformer, tx: optax.GradientTransformation,
          sampler: Callable[[jax.Array, int, int], Prompts], opts: GPTTrainOptions, *,
          steps: int, key: jax.Array, log_every: int = 100,
          log: Callable[[int, float], None] | None = None) -> tuple[ICLTransformer, np.ndarray]:
  """Runs `steps` optimisation steps on fresh prompts; returns the trained model (a new
  module) and the mean loss of each `log_every` window. `log(step, loss)` is called per window.
  A non-finite loss raises FloatingPointError."""
  steps = validation.positive_int("steps", steps)
  log_every = validation.positive_int("log_every", log_every)
  state, opt_state, step_fn, graphdef = make_train_step(model, tx, sampler, opts)
  history, window = [], []
  for t in range(steps):
    state, opt_state, loss = step_fn(state, opt_state, jax.random.fold_in(key, t))
    window.append(loss)
    if len(window) == log_every or t == steps - 1:
      mean = float(jnp.mean(jnp.stack(window)))
      if not np.isfinite(mean):
        raise FloatingPointError(f"GPT training loss became {mean} near step {t + 1}")
      history.append(mean)
      window = []
      if log is not None:
        log(t + 1, mean)
  return nnx.merge(graphdef, state), np.asarray(history)
