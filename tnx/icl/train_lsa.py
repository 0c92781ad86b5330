"""Training the LSA with optax on fresh prompts (arXiv 2510.03605, section 3 training setup).

Each step draws a new batch of prompts (x ~ N(0, Lambda) or a task mixture), embeds them with
the start estimate w_0 = 0 and minimises the one-pass objective

    L(V, W) = 1/2 E || f(Z)[:, -1] - (0_d, 0, w, 1) ||^2       (no CoT in training),

with the normaliser `count = n`. `trainable='sparse'` trains only the block V~ (W fixed at
c I / -c, the structure gradient flow keeps); 'full' trains every entry of V and W from the
sparse start (plus `init_scale` noise). With w_0 = 0, W~ receives no gradient, so c stays at
its initial value either way. The population minimiser is c V~ = -Gamma^{-1} (Theorem 3.1),
or the mixture form of `theory.mixture_preconditioner`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tnx import validation
from tnx.icl import lsa, theory
from tnx.icl.task import Prompts, TaskMixture, cov_sqrt, embed, sample_prompts

Sampler = Callable[[jax.Array, int, int], Prompts]


@dataclasses.dataclass(frozen=True)
class LSATrainConfig:
  """n: training context; steps, batch: optimisation length and prompts per step; lr: peak
  learning rate; optimizer: 'sgd' or 'adam'; schedule: 'constant' or 'cosine' (to 0);
  c: the W scale; trainable: 'sparse' or 'full'; init_scale: std of the noise added to the
  start in 'full' mode; chunk: steps per jitted scan (one loss record per chunk)."""

  n: int = 10
  steps: int = 20000
  batch: int = 64
  lr: float = 0.02
  optimizer: str = "sgd"
  schedule: str = "cosine"
  c: float = 1.0
  trainable: str = "sparse"
  init_scale: float = 0.0
  chunk: int = 500

  def __post_init__(self):
    for name in ("n", "steps", "batch", "chunk"):
      validation.positive_int(name, getattr(self, name))
    validation.positive("lr", self.lr)
    validation.positive("c", self.c)
    validation.non_negative("init_scale", self.init_scale)
    validation.one_of("optimizer", self.optimizer, ("sgd", "adam"))
    validation.one_of("schedule", self.schedule, ("constant", "cosine"))
    validation.one_of("trainable", self.trainable, ("sparse", "full"))
    if self.steps % self.chunk:
      raise ValueError(f"steps={self.steps} must be a multiple of chunk={self.chunk}")


def make_sampler(task: Any, *, dtype: Any = jnp.float32) -> tuple[Sampler, int]:
  """(sampler(key, batch, n) -> Prompts, d) for a covariance [d, d] or a TaskMixture."""
  if isinstance(task, TaskMixture):
    return (lambda key, b, n: task.sample(key, b, n, dtype=dtype)[0]), task.d
  root = jnp.asarray(cov_sqrt(task), dtype)
  return (lambda key, b, n: sample_prompts(key, b, n, root, dtype=dtype)), root.shape[0]


def one_pass_loss(params: lsa.LSAParams, prompts: Prompts, count: Any) -> jax.Array:
  """1/2 mean_b ||f(Z_b)[:, -1] - (0, 0, w_b, 1)||^2 with w_0 = 0."""
  x, y, w = prompts
  b, _, d = x.shape
  z_BxExL = embed(x, y, jnp.zeros_like(w))
  out_BxE = jax.vmap(lambda z: lsa.column(params, z, z.shape[1] - 1, count))(z_BxExL)
  target_BxE = jnp.concatenate([jnp.zeros((b, d + 1), w.dtype), w, jnp.ones((b, 1), w.dtype)],
                               -1)
  return 0.5 * jnp.mean(jnp.sum((out_BxE - target_BxE) ** 2, -1))


def _optimizer(cfg: LSATrainConfig) -> optax.GradientTransformation:
  lr = (optax.cosine_decay_schedule(cfg.lr, cfg.steps) if cfg.schedule == "cosine"
        else cfg.lr)
  return optax.sgd(lr) if cfg.optimizer == "sgd" else optax.adam(lr)


def train_lsa(key: jax.Array, task: Any, cfg: LSATrainConfig, *, dtype: Any = jnp.float32
              ) -> tuple[lsa.LSAParams, np.ndarray]:
  """Trains the LSA on fresh prompts of `task` (a covariance or a TaskMixture).

  Returns the trained full params and the mean training loss of each chunk [steps / chunk].
  """
  sampler, d = make_sampler(task, dtype=dtype)
  tx = _optimizer(cfg)
  k_init, k_data = jax.random.split(key)
  start = lsa.sparse_params(jnp.zeros((d, d), dtype), cfg.c, dtype=dtype)
  if cfg.trainable == "sparse":
    theta = start.v_ExE[d + 1:2 * d + 1, :d]
    to_params = lambda th: lsa.sparse_params(th, cfg.c, dtype=dtype)
  else:
    noise = lsa.random_params(k_init, d, 1.0, dtype=dtype)
    theta = jax.tree.map(lambda s, z: s + cfg.init_scale * z, start, noise)
    to_params = lambda th: th
  opt_state = tx.init(theta)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def run_chunk(theta, opt_state, first_step):
    def step(carry, t):
      theta, opt_state = carry
      prompts = sampler(jax.random.fold_in(k_data, t), cfg.batch, cfg.n)
      loss, grads = jax.value_and_grad(
          lambda th: one_pass_loss(to_params(th), prompts, cfg.n))(theta)
      updates, opt_state = tx.update(grads, opt_state, theta)
      return (optax.apply_updates(theta, updates), opt_state), loss
    (theta, opt_state), losses = jax.lax.scan(step, (theta, opt_state),
                                              first_step + jnp.arange(cfg.chunk))
    return theta, opt_state, jnp.mean(losses)

  history = []
  done = 0
  while done < cfg.steps:
    theta, opt_state, loss = run_chunk(theta, opt_state, done)
    done += cfg.chunk
    history.append(float(loss))
    if not np.isfinite(history[-1]):
      raise FloatingPointError(f"LSA training loss became {history[-1]} at step {done}; "
                               f"lower lr={cfg.lr}")
  return to_params(theta), np.asarray(history)


def population_loss(p_DxD: Any, lam: Any, n: int) -> float:
  """The population one-pass loss of the sparse LSA with preconditioner P (A = -P):
  1/2 [d - 2 tr(P Lambda) + tr(P Lambda Gamma P^T)]; minimal at P = Gamma^{-1}."""
  g = theory.gamma(lam, n)
  lam = np.asarray(lam, np.float64)
  p = np.asarray(p_DxD, np.float64)
  return 0.5 * float(len(lam) - 2 * np.trace(p @ lam) + np.trace(p @ lam @ g @ p.T))
