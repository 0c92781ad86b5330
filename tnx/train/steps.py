"""Pure step functions over the train state pytree (the functional nnx pattern: the model is
`nnx.merge(graphdef, params, rest)` inside `jax.jit`).

State: {'params': pure dict, 'rest': non-trainable model state, 'opt_state': optax state,
        'step': int32 count of applied updates, 'rng': uint32[2] key data}.
Batch: {'inputs': [B, L] int32, 'targets': [B, L] int32, 'weights': [B, L] float32}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from tnx.models.lm import LM, LMConfig

State = dict[str, Any]
Batch = dict[str, jax.Array]


def abstract_model(lm: LMConfig, seed: int) -> tuple[Any, Any, Any]:
  """(graphdef, abstract params, abstract rest) without allocating parameters."""
  model = nnx.eval_shape(lambda: LM(lm, rngs=nnx.Rngs(seed)))
  return nnx.split(model, nnx.Param, ...)


def init_state_fn(lm: LMConfig, tx: optax.GradientTransformation, seed: int
                  ) -> Callable[[], State]:
  """A function building the initial state (jit it with out_shardings for sharded init)."""
  def init() -> State:
    _, params, rest = nnx.split(LM(lm, rngs=nnx.Rngs(seed)), nnx.Param, ...)
    params = nnx.to_pure_dict(params)
    return {"params": params, "rest": nnx.to_pure_dict(rest), "opt_state": tx.init(params),
            "step": jnp.zeros((), jnp.int32),
            "rng": jax.random.key_data(jax.random.key(seed))}
  return init


def token_losses(graphdef: Any, params: Any, rest: Any, batch: Batch, *, fp32: bool = True
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(sum of weighted token NLL, sum of weights, weighted count of correct argmax)."""
  logits_BxLxV = nnx.merge(graphdef, params, rest)(batch["inputs"])
  if fp32:  # Precision: log-softmax and the loss in float32.
    logits_BxLxV = logits_BxLxV.astype(jnp.float32)
  logp = jax.nn.log_softmax(logits_BxLxV, axis=-1)
  targets = batch["targets"].astype(jnp.int32)
  nll_BxL = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  w = batch["weights"].astype(jnp.float32)
  correct = (jnp.argmax(logits_BxLxV, axis=-1) == targets).astype(jnp.float32)
  return (jnp.sum(nll_BxL.astype(jnp.float32) * w), jnp.sum(w), jnp.sum(correct * w))


def make_train_step(graphdef: Any, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, *, accum_steps: int = 1, fp32: bool = True
                    ) -> Callable[[State, Batch], tuple[State, dict[str, jax.Array]]]:
  """One optimizer step on a global batch, with `accum_steps` microbatches.

  The loss is sum(w * nll) / sum(w) over the whole batch, so accumulation gives the same
  gradient as one large batch. A step whose loss or gradient is not finite leaves params and
  optimizer state unchanged (metrics report finite=0) so the state stays a good checkpoint.
  """
  def micro_grad(params, rest, mb, total_w):
    def f(p):
      s, w, c = token_losses(graphdef, p, rest, mb, fp32=fp32)
      return s / total_w, (w, c)
    (loss, (_, correct)), grads = jax.value_and_grad(f, has_aux=True)(params)
    return loss, correct, grads

  def step(state: State, batch: Batch) -> tuple[State, dict[str, jax.Array]]:
    params, rest = state["params"], state["rest"]
    total_w = jnp.maximum(jnp.sum(batch["weights"].astype(jnp.float32)), 1.0)
    if accum_steps == 1:
      loss, correct, grads = micro_grad(params, rest, batch, total_w)
    else:
      micro = jax.tree.map(
          lambda x: x.reshape((accum_steps, x.shape[0] // accum_steps) + x.shape[1:]), batch)

      def body(carry, mb):
        loss, correct, grads = micro_grad(params, rest, mb, total_w)
        acc_l, acc_c, acc_g = carry
        return (acc_l + loss, acc_c + correct, jax.tree.map(jnp.add, acc_g, grads)), None

      zeros = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32),
               jax.tree.map(jnp.zeros_like, params))
      (loss, correct, grads), _ = jax.lax.scan(body, zeros, micro)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = dict(state, params=keep(new_params, params),
                     opt_state=keep(opt_state, state["opt_state"]),
                     step=state["step"] + finite.astype(jnp.int32))
    metrics = {"loss": loss, "grad_norm": grad_norm, "lr": schedule(state["step"]),
               "accuracy": correct / total_w, "finite": finite.astype(jnp.int32)}
    return new_state, metrics

  return step


def make_eval_step(graphdef: Any, *, fp32: bool = True
                   ) -> Callable[[Any, Any, Batch], tuple[jax.Array, jax.Array, jax.Array]]:
  """(params, rest, batch) -> (nll sum, weight sum, correct sum)."""
  def step(params, rest, batch):
    return token_losses(graphdef, params, rest, batch, fp32=fp32)
  return step
