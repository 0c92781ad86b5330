"""An exactly solvable selection problem: synthetic classification domains and a small MLP.

Small enough that every per-sample gradient G_S [n, P] and the target Hessian H_T [P, P] can be
formed exactly, so each approximation of Influence Distillation can be checked against the
quantity it approximates (examples/influence_distillation.py --experiment=sandbox, and tests).

Domains: `num_domains` Gaussian blobs in R^dim (centres ~ N(0, spread^2 I), unit covariance),
each labelled by its own linear rule y = argmax(W_d x) over `num_classes` classes:
  domain 0  the target's rule on the target's blob (aligned, helpful);
  domain 1  a blob next to the target's with the target rule rotated (looks alike, hurts);
  domain 2  the target's blob and rule with `noise` of the labels redrawn uniformly;
  others    random blobs and rules.
The target set and the held-out evaluation set are fresh draws from domain 0.

Dimension letters: N samples, X input width (dim), C classes, F hidden width.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from tnx import validation


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
  """Sizes and seeds of the synthetic problem."""

  dim: int = 16
  num_classes: int = 4
  hidden: int = 32
  num_domains: int = 8
  per_domain: int = 500
  target_size: int = 64
  heldout_size: int = 2000
  spread: float = 2.0
  rotation: float = 0.8      # radians of the look-alike domain's rule rotation
  noise: float = 0.3         # label-noise rate of domain 2
  seed: int = 0

  def __post_init__(self):
    for name in ("dim", "num_classes", "hidden", "per_domain", "target_size", "heldout_size"):
      validation.positive_int(name, getattr(self, name))
    if validation.positive_int("num_domains", self.num_domains) < 3:
      raise ValueError(f"num_domains must be >= 3 (aligned, look-alike, noisy), got "
                       f"{self.num_domains}")
    validation.positive("spread", self.spread)
    validation.in_range("noise", self.noise, 0, 1)


def _rotate(w_CxX: jax.Array, angle: float, key: jax.Array) -> jax.Array:
  """Rotates every class direction by `angle` within a random plane."""
  q, _ = jnp.linalg.qr(jax.random.normal(key, (w_CxX.shape[1], 2), w_CxX.dtype))
  c, s = jnp.cos(angle), jnp.sin(angle)
  rot = jnp.eye(w_CxX.shape[1], dtype=w_CxX.dtype) + (c - 1) * (
      jnp.outer(q[:, 0], q[:, 0]) + jnp.outer(q[:, 1], q[:, 1])) + s * (
          jnp.outer(q[:, 1], q[:, 0]) - jnp.outer(q[:, 0], q[:, 1]))
  return w_CxX @ rot.T


def make_sandbox(cfg: SandboxConfig, dtype: Any = jnp.float32) -> dict[str, Any]:
  """{'pool': {'x' [N, X], 'y' [N]}, 'domain' [N], 'target': {...}, 'heldout': {...}}."""
  keys = jax.random.split(jax.random.key(cfg.seed), 8)
  d, c, nd = cfg.dim, cfg.num_classes, cfg.num_domains
  centres = cfg.spread * jax.random.normal(keys[0], (nd, d), dtype)
  rules = jax.random.normal(keys[1], (nd, c, d), dtype)
  centres = centres.at[2].set(centres[0])
  centres = centres.at[1].set(centres[0] + 0.5 * jax.random.normal(keys[2], (d,), dtype))
  rules = rules.at[2].set(rules[0]).at[1].set(_rotate(rules[0], cfg.rotation, keys[3]))

  def draw(key, domain, count):
    kx, kn, kr = jax.random.split(key, 3)
    x = centres[domain] + jax.random.normal(kx, (count, d), dtype)
    y = jnp.argmax((x - centres[domain]) @ rules[domain].T, axis=-1)
    if domain == 2:
      flip = jax.random.uniform(kn, (count,)) < cfg.noise
      y = jnp.where(flip, jax.random.randint(kr, (count,), 0, c), y)
    return {"x": x, "y": y.astype(jnp.int32)}

  parts = [draw(jax.random.fold_in(keys[4], i), i, cfg.per_domain) for i in range(nd)]
  pool = jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)
  domain = jnp.repeat(jnp.arange(nd), cfg.per_domain)
  return {"pool": pool, "domain": domain, "target": draw(keys[5], 0, cfg.target_size),
          "heldout": draw(keys[6], 0, cfg.heldout_size)}


def mlp_init(key: jax.Array, dim: int, hidden: int, num_classes: int,
             dtype: Any = jnp.float32) -> dict[str, jax.Array]:
  """Parameters of x -> W2 tanh(W1 x + b1) + b2 (fan-in scaled normal init)."""
  k1, k2 = jax.random.split(key)
  return {"w1": jax.random.normal(k1, (dim, hidden), dtype) / jnp.sqrt(dim),
          "b1": jnp.zeros((hidden,), dtype),
          "w2": jax.random.normal(k2, (hidden, num_classes), dtype) / jnp.sqrt(hidden),
          "b2": jnp.zeros((num_classes,), dtype)}


def mlp_hidden(params: dict[str, jax.Array], x_X: jax.Array) -> jax.Array:
  """The first block's output tanh(W1 x + b1) [F] (the JVP-embedding feature map)."""
  return jnp.tanh(x_X @ params["w1"] + params["b1"])


def mlp_logits(params: dict[str, jax.Array], x_X: jax.Array) -> jax.Array:
  return mlp_hidden(params, x_X) @ params["w2"] + params["b2"]


def mlp_loss(params: dict[str, jax.Array], example: dict[str, jax.Array]) -> jax.Array:
  """Cross-entropy of one example {'x': [X], 'y': int}."""
  return -jax.nn.log_softmax(mlp_logits(params, example["x"]))[example["y"]]


def mean_loss(params: dict[str, jax.Array], examples: dict[str, jax.Array]) -> jax.Array:
  return jnp.mean(jax.vmap(lambda e: mlp_loss(params, e))(examples))


def accuracy(params: dict[str, jax.Array], examples: dict[str, jax.Array]) -> jax.Array:
  pred = jnp.argmax(jax.vmap(lambda x: mlp_logits(params, x))(examples["x"]), axis=-1)
  return jnp.mean(pred == examples["y"])
