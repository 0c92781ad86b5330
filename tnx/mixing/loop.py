"""A general optax loop for K-domain training with sampling weights b(t) and loss weights w(t)
that the algorithms of arXiv 2511.06913 update during training.

The model is a per-example loss `loss_fn(params, example) -> scalar` over a params pytree: a pure
function (e.g. `linreg.squared_loss`), or a Flax NNX module through `nnx_loss`. One step draws
b_i examples from each domain into `max_batch` fixed slots (masks select the active ones, so a
new b never recompiles), and applies the stratified gradient
sum_i (pi_i w_i / b_i) sum_j grad l. Every `update_every` steps (a round) the loop

  1. measures per-domain validation loss mean L_i and variance Var_i at the current params;
  2. updates the loss weights: 'fgls' (one-shot FGLS, paper Algorithm 1: EMA noise estimate
     s_i from 2 L_i, then w_i ~ n_i / (pi_i s_i)) or 'erma' (the paper's ERMA rule);
  3. updates the sampling weights: 'va' (paper Algorithm 2: EMA of the within-domain per-example
     gradient variance from a probe batch, then b ~ pi w v, rounded) or 'pi_w' (b ~ pi w);
  and records w, b, the estimates and `eval_fn(params)` in the round's trace.

Choices the paper's text does not confirm, all fields of MixingConfig: the update period, the
EMA factor, FGLS's initial noise estimate (1, as in our reading, or the first measurement),
ERMA's G(t) ('constant' = 1 or 'inv_sqrt' = 1/sqrt(round + 1)), validation on the whole held-out
split or a random subset, the probe size, sampling with or without replacement, the rounding.

Methods of the paper's 2 x 2 grid: Uniform = ('none', 'pi'); loss-only = ('fgls'|'erma', 'pi');
sampling-only = ('none', 'va'); both = ('fgls'|'erma', 'va').
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tnx import validation
from tnx.mixing import sampling as S
from tnx.mixing import weights as W
from tnx.mixing.pools import Pools, per_domain_mean

LOSS_RULES = ("none", "fgls", "erma")
SAMPLING_RULES = ("pi", "pi_w", "fixed", "va")
ERMA_G = ("constant", "inv_sqrt")
LossFn = Callable[[Any, Any], jax.Array]


@dataclasses.dataclass(frozen=True)
class MixingConfig:
  batch_size: int = 32                 # B = sum_i b_i
  max_batch: int = 0                   # compiled slots M >= B (0 = B)
  loss_rule: str = "none"              # none | fgls | erma
  sampling_rule: str = "pi"            # pi (b ~ pi) | pi_w (b ~ pi w) | fixed | va
  batch_counts: tuple[int, ...] = ()   # b for sampling_rule='fixed'
  update_every: int = 10               # tau: steps per round (one weight update per round)
  warmup_steps: int = 0                # loss weights held at w0 before this step
  ema: float = 0.1                     # beta of the FGLS noise and VA variance averages
  fgls_init: str = "one"               # initial FGLS noise estimate: 'one' | 'first'
  noise_from_loss: float = 2.0         # FGLS: sigma_i^2 estimate = this * mean val loss
  erma_gamma1: float = 0.1             # ERMA step on the loss term
  erma_gamma2: float = 1.0             # ERMA step on the variance term
  erma_g: str = "constant"             # G(t): constant | inv_sqrt
  probe_size: int = 32                 # VA: per-example gradients per domain per round
  val_size: int = 0                    # validation examples per domain per round (0 = all)
  replace: bool = True                 # sample each domain with replacement
  rounding: str = "largest_remainder"  # VA integer rounding: largest_remainder | greedy

  def __post_init__(self):
    b = validation.positive_int("batch_size", self.batch_size)
    m = validation.non_negative_int("max_batch", self.max_batch)
    if m and m < b:
      raise ValueError(f"max_batch={m} must be 0 or >= batch_size={b}")
    validation.one_of("loss_rule", self.loss_rule, LOSS_RULES)
    validation.one_of("sampling_rule", self.sampling_rule, SAMPLING_RULES)
    validation.one_of("fgls_init", self.fgls_init, ("one", "first"))
    validation.one_of("erma_g", self.erma_g, ERMA_G)
    validation.one_of("rounding", self.rounding, S.ROUNDINGS)
    validation.positive_int("update_every", self.update_every)
    validation.non_negative_int("warmup_steps", self.warmup_steps)
    validation.in_range("ema", self.ema, 0.0, 1.0, low_open=True)
    validation.positive("noise_from_loss", self.noise_from_loss)
    validation.non_negative("erma_gamma1", self.erma_gamma1)
    validation.positive("erma_gamma2", self.erma_gamma2)
    validation.non_negative_int("val_size", self.val_size)
    if self.sampling_rule == "va" and self.probe_size < 2:
      raise ValueError(f"probe_size={self.probe_size} must be >= 2 for sampling_rule='va' "
                       "(a variance needs two gradients)")
    if self.sampling_rule == "fixed" and not self.batch_counts:
      raise ValueError("sampling_rule='fixed' needs batch_counts (one int >= 1 per domain)")

  @property
  def slots(self) -> int:
    return self.max_batch or self.batch_size


class MixState(NamedTuple):
  w: jax.Array       # [K] loss weights (sum pi w = 1)
  b: jax.Array       # [K] int32 examples per domain per step
  b_base: jax.Array  # [K] int32 allocation without sampling updates (b ~ pi or fixed)
  noise: W.EMA       # FGLS noise estimates sigma_i^2
  v2: W.EMA          # VA within-domain gradient variance estimates


class LoopState(NamedTuple):
  params: Any
  opt_state: Any
  mix: MixState
  step: jax.Array    # [] int32


def nnx_loss(module: Any, example_loss: Callable[[Any, Any], jax.Array]
             ) -> tuple[LossFn, Any, Callable[[Any], Any]]:
  """(loss_fn(params, example), params as a pure dict, rebuild(params) -> module) for an NNX
  module; `example_loss(module, example)` is the loss of one example. Non-parameter state is
  held fixed."""
  from flax import nnx
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)
  params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)

  def loss_fn(p, example):
    return example_loss(nnx.merge(graphdef, p, rest), example)

  return loss_fn, params, lambda p: nnx.merge(graphdef, p, rest)


class Loop:
  """Jit-able pieces of the loop for a fixed loss, optimizer and config (see module doc)."""

  def __init__(self, loss_fn: LossFn, tx: optax.GradientTransformation, cfg: MixingConfig,
               eval_fn: Callable[[Any], dict[str, jax.Array]] | None = None):
    self.loss_fn, self.tx, self.cfg, self.eval_fn = loss_fn, tx, cfg, eval_fn

  # ------------------------------------------------------------------------ state
  def init(self, key: jax.Array, params: Any, train: Pools, pi_K: jax.Array,
           w0_K: jax.Array | None = None, b0_K: jax.Array | None = None,
           switches: dict[str, jax.Array] | None = None) -> LoopState:
    """Initial state. b0_K (traced, sum B) overrides the baseline allocation (b ~ pi, or
    cfg.batch_counts for 'fixed'); `switches` as in `run`."""
    cfg, k = self.cfg, train.n.shape[0]
    dtype = pi_K.dtype
    w = W.normalize(pi_K, jnp.ones((k,), dtype) if w0_K is None else w0_K.astype(dtype))
    noise = W.ema_init(k, 1.0, dtype)
    v2 = W.ema_init(k, 1.0, dtype)
    if b0_K is not None:
      b_base = b0_K.astype(jnp.int32)
    elif cfg.sampling_rule == "fixed":
      b_base = jnp.asarray(cfg.batch_counts, jnp.int32)
    else:
      b_base = S.proportional_allocation(pi_K, cfg.batch_size)
    b = b_base
    if cfg.sampling_rule == "va":  # initial probe (one pass before training)
      v2 = W.ema_update(v2, self.probe_variance(params, key, train), cfg.ema, from_first=True)
      b = S.allocate(pi_K, w, jnp.sqrt(v2.value), cfg.batch_size, cfg.rounding)
    elif cfg.sampling_rule == "pi_w":
      b = S.proportional_allocation(pi_K * w, cfg.batch_size)
    b = _switch(switches, "sampling", b, b_base)
    return LoopState(params, self.tx.init(params), MixState(w, b, b_base, noise, v2),
                     jnp.zeros((), jnp.int32))

  # ------------------------------------------------------------------------ one SGD step
  def step(self, state: LoopState, key: jax.Array, train: Pools, pi_K: jax.Array
           ) -> tuple[LoopState, dict[str, jax.Array]]:
    """One stratified step; metrics: 'objective' (the estimate of sum pi w Lhat) and
    'domain_loss' [K] (mean loss of each domain's draws)."""
    mix, k = state.mix, train.n.shape[0]
    slots = S.slot_layout(mix.b, self.cfg.slots)
    idx = S.draw_indices(key, slots, train.n, train.n_max, replace=self.cfg.replace)
    batch = S.gather(train.data, slots.domain, idx)
    coef_M = S.slot_coefficients(slots, pi_K, mix.w, mix.b)

    def objective(p):
      losses_M = jax.vmap(self.loss_fn, (None, 0))(p, batch)
      losses_M = jnp.where(slots.active, losses_M, 0.0)
      return jnp.sum(coef_M * losses_M), losses_M

    (obj, losses_M), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    dom = jax.ops.segment_sum(losses_M, slots.domain, k) / jnp.maximum(mix.b, 1)
    return state._replace(params=params, opt_state=opt_state, step=state.step + 1), \
        {"objective": obj, "domain_loss": dom}

  # ------------------------------------------------------------------------ statistics
  def val_stats(self, params: Any, key: jax.Array, val: Pools) -> tuple[jax.Array, jax.Array]:
    """Per-domain (mean, variance) of the per-example loss on held-out data ([K] each)."""
    per_domain = jax.vmap(jax.vmap(self.loss_fn, (None, 0)), (None, 0))
    if self.cfg.val_size == 0:
      return per_domain_mean(per_domain(params, val.data), val.n)
    k, m = val.n.shape[0], self.cfg.val_size
    idx = jnp.floor(jax.random.uniform(key, (k, m)) * val.n[:, None]).astype(jnp.int32)
    ex = jax.tree.map(lambda x: x[jnp.arange(k)[:, None], idx], val.data)
    losses = per_domain(params, ex)
    return jnp.mean(losses, axis=1), jnp.var(losses, axis=1)

  def probe_variance(self, params: Any, key: jax.Array, train: Pools) -> jax.Array:
    """Trace of the within-domain per-example gradient covariance (unbiased, [K]) from
    `probe_size` draws per domain."""
    k, m = train.n.shape[0], self.cfg.probe_size
    idx = jnp.floor(jax.random.uniform(key, (k, m)) * train.n[:, None]).astype(jnp.int32)
    idx = jnp.minimum(idx, train.n[:, None] - 1)
    ex = jax.tree.map(lambda x: x[jnp.arange(k)[:, None], idx], train.data)
    g = jax.vmap(jax.vmap(jax.grad(self.loss_fn), (None, 0)), (None, 0))(params, ex)
    per_leaf = [jnp.sum(jnp.var(x.reshape(k, m, -1), axis=1, ddof=1), axis=1)
                for x in jax.tree.leaves(g)]
    return sum(per_leaf)

  # ------------------------------------------------------------------------ weight update
  def update_weights(self, state: LoopState, key: jax.Array, train: Pools, val: Pools,
                     pi_K: jax.Array, rnd: jax.Array,
                     switches: dict[str, jax.Array] | None = None
                     ) -> tuple[LoopState, dict[str, jax.Array]]:
    """One round's update of w (loss rule) then b (sampling rule, using the new w)."""
    cfg, mix = self.cfg, state.mix
    k_val, k_probe = jax.random.split(key)
    loss_K, var_K = self.val_stats(state.params, k_val, val)
    noise = mix.noise
    if cfg.loss_rule == "fgls":
      noise = W.ema_update(noise, cfg.noise_from_loss * loss_K, cfg.ema,
                           from_first=cfg.fgls_init == "first")
      w_new = W.fgls_weights(noise.value, train.n.astype(pi_K.dtype), pi_K)
    elif cfg.loss_rule == "erma":
      g = 1.0 if cfg.erma_g == "constant" else jax.lax.rsqrt(rnd + 1.0)
      w_new = W.erma_update(mix.w, pi_K, loss_K, var_K, gamma1=cfg.erma_gamma1,
                            gamma2=cfg.erma_gamma2, g=g)
    else:
      w_new = mix.w
    w_new = _switch(switches, "loss", w_new.astype(mix.w.dtype), mix.w)
    w = jnp.where(state.step >= cfg.warmup_steps, w_new, mix.w)
    v2, b = mix.v2, mix.b
    if cfg.sampling_rule == "va":
      v2 = W.ema_update(v2, self.probe_variance(state.params, k_probe, train), cfg.ema,
                        from_first=True)
      b = S.allocate(pi_K, w, jnp.sqrt(v2.value), cfg.batch_size, cfg.rounding)
    elif cfg.sampling_rule == "pi_w":
      b = S.proportional_allocation(pi_K * w, cfg.batch_size)
    b = _switch(switches, "sampling", b, mix.b_base)
    new = state._replace(mix=MixState(w, b, mix.b_base, noise, v2))
    return new, {"val_loss": loss_K, "val_var": var_K}

  # ------------------------------------------------------------------------ full run
  def run(self, key: jax.Array, params: Any, train: Pools, val: Pools, pi_K: jax.Array, *,
          steps: int, w0_K: jax.Array | None = None, b0_K: jax.Array | None = None,
          switches: dict[str, jax.Array] | None = None
          ) -> tuple[LoopState, dict[str, jax.Array]]:
    """`steps` SGD steps in rounds of `update_every` (jit/vmap-able; `steps` static).

    `switches` = {'loss': bool[], 'sampling': bool[]} (traced) turns the configured rules off
    (w stays w0; b stays the baseline allocation): one compiled program with
    cfg = (fgls|erma, va) then runs all four methods of the paper's grid, vmapped (see
    `method_switches`).

    Randomness: the batch stream depends only on (key, step), per domain, and the update
    stream only on (key, round), so methods run on the same key share their draws.
    Returns the final state and a trace of per-round arrays [R, ...]: 'step', 'w', 'b',
    'noise', 'v2', 'val_loss', 'val_var', 'objective', 'domain_loss' and eval_fn's outputs,
    each taken after the round's update (b is what the next round uses).
    """
    tau = self.cfg.update_every
    if steps % tau:
      raise ValueError(f"steps={steps} must be a multiple of update_every={tau}")
    k_init, k_batch, k_update = jax.random.split(key, 3)
    state = self.init(k_init, params, train, pi_K, w0_K, b0_K, switches)

    def one_round(state, r):
      def one_step(st, t):
        return self.step(st, jax.random.fold_in(k_batch, t), train, pi_K)

      state, ms = jax.lax.scan(one_step, state, r * tau + jnp.arange(tau))
      state, stats = self.update_weights(state, jax.random.fold_in(k_update, r), train, val,
                                         pi_K, r.astype(pi_K.dtype), switches)
      out = {"step": state.step, "w": state.mix.w, "b": state.mix.b,
             "noise": state.mix.noise.value, "v2": state.mix.v2.value,
             "objective": jnp.mean(ms["objective"]),
             "domain_loss": jnp.mean(ms["domain_loss"], axis=0), **stats}
      if self.eval_fn is not None:
        out.update(self.eval_fn(state.params))
      return state, out

    return jax.lax.scan(one_round, state, jnp.arange(steps // tau))


def _switch(switches: dict[str, jax.Array] | None, name: str, on: jax.Array, off: jax.Array
            ) -> jax.Array:
  if switches is None or name not in switches:
    return on
  return jnp.where(switches[name], on, off)


METHODS = ("uniform", "loss", "sampling", "both")


def method_switches(methods: tuple[str, ...] = METHODS) -> dict[str, jax.Array]:
  """Switch arrays [M] for `Loop.run` (vmap over them): 'uniform' (neither rule), 'loss'
  (loss rule only), 'sampling' (sampling rule only), 'both'."""
  for m in methods:
    validation.one_of("method", m, METHODS)
  return {"loss": jnp.array([m in ("loss", "both") for m in methods]),
          "sampling": jnp.array([m in ("sampling", "both") for m in methods])}


def check_inputs(cfg: MixingConfig, train: Pools, val: Pools, pi: Any, w0: Any = None
                 ) -> tuple[np.ndarray, np.ndarray | None]:
  """Host-side validation of a run's inputs (ValueError naming the argument)."""
  k = int(train.n.shape[0])
  if int(val.n.shape[0]) != k:
    raise ValueError(f"val has {int(val.n.shape[0])} domains but train has {k}")
  W.check_counts(np.asarray(train.n), k, "train.n")
  W.check_counts(np.asarray(val.n), k, "val.n")
  pi = W.check_pi(pi, k)
  w0 = None if w0 is None else W.check_loss_weights(w0, k, "w0")
  W.check_budget(cfg.batch_size, k)
  if cfg.sampling_rule == "fixed":
    S.counts_from_allocation(cfg.batch_counts, k, cfg.batch_size, cfg.slots)
  if not cfg.replace and cfg.batch_size > int(np.min(np.asarray(train.n))) and \
      cfg.sampling_rule != "fixed":
    raise ValueError(f"batch_size={cfg.batch_size} can exceed the smallest domain "
                     f"({int(np.min(np.asarray(train.n)))} examples) under replace=False; use "
                     "replace=True or sampling_rule='fixed' with b_i <= n_i")
  return pi, w0


def fit(loss_fn: LossFn, params: Any, tx: optax.GradientTransformation, cfg: MixingConfig,
        train: Pools, val: Pools, pi: Any, *, steps: int, seed: int | jax.Array = 0,
        w0: Any = None, eval_fn: Callable[[Any], dict[str, jax.Array]] | None = None
        ) -> tuple[LoopState, dict[str, jax.Array]]:
  """Validates the inputs, then runs the jitted loop (see `Loop.run`)."""
  pi, w0 = check_inputs(cfg, train, val, pi, w0)
  validation.positive_int("steps", steps)
  dtype = jax.tree.leaves(params)[0].dtype
  key = jax.random.key(seed) if isinstance(seed, int) else seed
  loop = Loop(loss_fn, tx, cfg, eval_fn)
  run = jax.jit(lambda key, p, tr, va, pi, w0: loop.run(key, p, tr, va, pi, steps=steps,
                                                        w0_K=w0))
  return run(key, params, train, val, jnp.asarray(pi, dtype),
             None if w0 is None else jnp.asarray(w0, dtype))
