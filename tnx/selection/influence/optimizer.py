"""The next optimizer step as an affine function of the gradient, read from a real optax state.

Influence Distillation (arXiv 2505.19051, Sec. 3) models one step of the training mechanism on
the weighted source loss. For the optimizers used in practice that step is affine in the new
gradient g:

  theta' = theta - lr * (b + a * g)          (element-wise)

- gradient descent: a = 1, b = 0;
- SGD with momentum mu (optax.sgd / optax.trace, buffer `trace`): the update is g + mu * buf,
  so a = 1, b = mu * buf (Nesterov: a = 1 + mu, b = mu^2 * buf); decoupled weight decay
  chained before it adds wd * theta to b;
- Adam / AdamW (optax.scale_by_adam, state count t = steps taken, mu = m, nu = v): optax's next
  step uses the bias corrections of step t + 1,
    m' = b1 m + (1 - b1) g,   m_hat = m' / (1 - b1^(t+1)),   v_hat = v' / (1 - b2^(t+1)),
    update = m_hat / (sqrt(v_hat + eps_root) + eps) + wd * theta (AdamW, masked),
  with the second moment v' frozen -- it does not see the new gradient, which is what makes the
  step affine. Hence
    a = (1 - b1) / ((1 - b1^(t+1)) (sqrt(v_hat + eps_root) + eps)),
    b = b1 m / ((1 - b1^(t+1)) (sqrt(v_hat + eps_root) + eps)) + wd * mask * theta.
  `second_moment='decayed'` (default) takes v' = b2 v, i.e. optax's update minus the new
  gradient's own contribution; this is the exact derivative of a real optax step at g = 0.
  `second_moment='stored'` takes v' = v, the convention of the authors' public code.

Gradient clipping (optax.clip_by_global_norm) is not part of the affine model (it is inactive
whenever the weighted gradient's norm is below the threshold). Hyperparameters are not stored
in optax states unless the optimizer was built with `optax.inject_hyperparams`; they are then
read from the state (an injected learning rate is the value the last step used; pass the
schedule itself to get the next step's), otherwise they must be passed. A schedule learning rate
is evaluated at the schedule's own step count (optax.scale_by_schedule), like the real next
step.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from tnx import validation


@dataclasses.dataclass(frozen=True)
class AffineStep:
  """theta' = theta - lr * (b + a * g). `a`, `b` are pytrees shaped like the parameters."""

  lr: Any
  a: Any
  b: Any
  kind: str

  def apply(self, params: Any, grads: Any) -> Any:
    """The modelled next parameters for gradient `grads`."""
    return jax.tree.map(lambda p, a, b, g: p - self.lr * (b + a * g), params, self.a, self.b,
                        grads)

  def direction(self, grads: Any) -> Any:
    """b + a * g (the step is -lr times this)."""
    return jax.tree.map(lambda a, b, g: b + a * g, self.a, self.b, grads)


def gd_affine(params: Any, learning_rate: float) -> AffineStep:
  """Plain gradient descent: a = 1, b = 0."""
  lr = validation.positive("learning_rate", learning_rate)
  return AffineStep(lr, jax.tree.map(jnp.ones_like, params), jax.tree.map(jnp.zeros_like, params),
                    "gd")


def _find(state: Any, cls: type | tuple[type, ...]) -> list[Any]:
  found = [x for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, cls))
           if isinstance(x, cls)]
  return found


_INJECTED = tuple(c for c in (getattr(optax, "InjectHyperparamsState", None),
                              getattr(optax, "InjectStatefulHyperparamsState", None)) if c)


def _hyper(state: Any) -> dict[str, Any]:
  out: dict[str, Any] = {}
  for s in _find(state, _INJECTED):
    out.update({k: v for k, v in s.hyperparams.items()})
  return out


def _resolve(name: str, given: Any, injected: dict[str, Any], default: Any = None) -> Any:
  if given is not None:
    return given
  if name in injected:
    return injected[name]
  if default is not None:
    return default
  raise ValueError(f"{name} is not stored in the optimizer state (build it with "
                   f"optax.inject_hyperparams to store it) and was not given; pass {name}=...")


def _learning_rate(state: Any, learning_rate: Any, injected: dict[str, Any], count: Any) -> Any:
  lr = _resolve("learning_rate", learning_rate, injected)
  if callable(lr):
    sched = _find(state, optax.ScaleByScheduleState)
    step = sched[0].count if sched else count
    lr = lr(step)
  if not callable(learning_rate) and isinstance(lr, (int, float)):
    validation.positive("learning_rate", lr)
  return lr


def _decay(params: Any, weight_decay: float, mask: Any) -> Any:
  if mask is None:
    return jax.tree.map(lambda p: weight_decay * p, params)
  if callable(mask):
    mask = mask(params)
  return jax.tree.map(lambda p, m: jnp.where(m, weight_decay * p, jnp.zeros_like(p)), params,
                      mask)


def adam_affine(opt_state: Any, params: Any, *, learning_rate: float | Callable | None = None,
                b1: float | None = None, b2: float | None = None, eps: float | None = None,
                eps_root: float | None = None, weight_decay: float | None = None,
                weight_decay_mask: Any = None, second_moment: str = "decayed") -> AffineStep:
  """The affine form of the next Adam/AdamW step from an optax state holding ScaleByAdamState.

  Args:
    opt_state: the optax state (any chain containing one `optax.ScaleByAdamState`).
    params: current parameters (for decoupled weight decay).
    learning_rate: float or schedule; default: the injected hyperparameter.
    b1, b2, eps, eps_root, weight_decay: Adam hyperparameters (default: injected values;
      weight_decay defaults to 0 if not injected).
    weight_decay_mask: pytree of bools or a callable params -> pytree (as in optax.adamw).
    second_moment: 'decayed' (v' = b2 v) or 'stored' (v' = v); see the module docstring.
  """
  validation.one_of("second_moment", second_moment, ("decayed", "stored"))
  adam = _find(opt_state, optax.ScaleByAdamState)
  if len(adam) != 1:
    raise ValueError(f"opt_state must contain exactly one optax ScaleByAdamState, found "
                     f"{len(adam)}")
  adam = adam[0]
  hp = _hyper(opt_state)
  b1 = validation.in_range("b1", _resolve("b1", b1, hp), 0, 1, high_open=True)
  b2 = validation.in_range("b2", _resolve("b2", b2, hp), 0, 1, high_open=True)
  eps = validation.non_negative("eps", _resolve("eps", eps, hp))
  eps_root = validation.non_negative("eps_root", _resolve("eps_root", eps_root, hp, 0.0))
  wd = validation.non_negative("weight_decay", _resolve("weight_decay", weight_decay, hp, 0.0))
  lr = _learning_rate(opt_state, learning_rate, hp, adam.count)
  v_scale = b2 if second_moment == "decayed" else 1.0
  mask = None
  if wd:
    mask = weight_decay_mask(params) if callable(weight_decay_mask) else weight_decay_mask
  a, drift = _adam_terms(adam.count, adam.mu, adam.nu, params, mask, b1, b2, eps, eps_root, wd,
                         v_scale)
  return AffineStep(lr, a, drift, "adam")


@functools.partial(jax.jit, static_argnums=(5, 6, 7, 8, 9, 10))
def _adam_terms(count, mu, nu, params, mask, b1, b2, eps, eps_root, wd, v_scale):
  """(a, b) of the next Adam step, in one compiled computation over the state pytrees."""
  t1 = jnp.asarray(count).astype(jax.tree.leaves(mu)[0].dtype) + 1
  c1 = 1 - b1**t1
  c2 = 1 - b2**t1

  def denom(v):
    return jnp.sqrt(v_scale * v / c2 + eps_root) + eps

  a = jax.tree.map(lambda v: ((1 - b1) / c1 / denom(v)).astype(v.dtype), nu)
  drift = jax.tree.map(lambda m, v: (b1 * m / c1 / denom(v)).astype(m.dtype), mu, nu)
  if wd:
    drift = jax.tree.map(jnp.add, drift, _decay(params, wd, mask))
  return a, drift


def sgd_affine(opt_state: Any, params: Any, *, learning_rate: float | Callable | None = None,
               momentum: float | None = None, nesterov: bool = False,
               weight_decay: float = 0.0, weight_decay_mask: Any = None) -> AffineStep:
  """The affine form of the next SGD step; momentum from an `optax.TraceState` if present.

  Args:
    opt_state: the optax state (optax.sgd(lr, momentum) holds a TraceState when momentum > 0).
    learning_rate: float or schedule (default: the injected hyperparameter).
    momentum: the trace decay (default: injected value, else 0 when no TraceState exists).
    nesterov: as passed to optax.sgd.
    weight_decay: decoupled decay chained before the trace (optax.add_decayed_weights).
  """
  traces = _find(opt_state, optax.TraceState)
  if len(traces) > 1:
    raise ValueError(f"opt_state must contain at most one optax TraceState, found {len(traces)}")
  hp = _hyper(opt_state)
  lr = _learning_rate(opt_state, learning_rate, hp, jnp.zeros((), jnp.int32))
  wd = validation.non_negative("weight_decay", weight_decay)
  ones = jax.tree.map(jnp.ones_like, params)
  if not traces:
    b = jax.tree.map(jnp.zeros_like, params)
    if wd:
      b = _decay(params, wd, weight_decay_mask)
    return AffineStep(lr, ones, b, "sgd")
  mu = validation.in_range("momentum", _resolve("momentum", momentum, hp), 0, 1,
                           high_open=True)
  buf = traces[0].trace
  if nesterov:
    a = jax.tree.map(lambda x: (1 + mu) * x, ones)
    b = jax.tree.map(lambda t: mu * mu * t, buf)
  else:
    a, b = ones, jax.tree.map(lambda t: mu * t, buf)
  if wd:  # the decay term enters the gradient, hence the trace, like g itself
    dec = _decay(params, wd, weight_decay_mask)
    b = jax.tree.map(lambda bb, aa, d: bb + aa * d, b, a, dec)
  return AffineStep(lr, a, b, "sgd")


def affine_from_optax(opt_state: Any, params: Any, **hyperparams: Any) -> AffineStep:
  """Dispatches on the state: Adam(W) if it holds a ScaleByAdamState, otherwise SGD (with
  momentum if it holds a TraceState). Keyword arguments go to `adam_affine` / `sgd_affine`."""
  if _find(opt_state, optax.ScaleByAdamState):
    return adam_affine(opt_state, params, **hyperparams)
  return sgd_affine(opt_state, params, **hyperparams)
