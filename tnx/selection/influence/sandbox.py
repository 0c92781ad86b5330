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
import numpy as np

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


def _rotate(w_CxX: np.ndarray, angle: float, rng: np.random.Generator) -> np.ndarray:
  """Rotates every class direction by `angle` within a random plane."""
  q, _ = np.linalg.qr(rng.standard_normal((w_CxX.shape[1], 2)))
  c, s = np.cos(angle), np.sin(angle)
  u, v = q[:, 0], q[:, 1]
  rot = (np.eye(w_CxX.shape[1]) + (c - 1) * (np.outer(u, u) + np.outer(v, v))
         + s * (np.outer(v, u) - np.outer(u, v)))
  return w_CxX @ rot.T


def make_sandbox(cfg: SandboxConfig, dtype: Any = jnp.float32) -> dict[str, Any]:
  """{'pool': {'x' [N, X], 'y' [N]}, 'domain' [N], 'target': {...}, 'heldout': {...}}
  (generated with NumPy from cfg.seed, returned as jax arrays of `dtype` / int32)."""
  rng = np.random.default_rng(cfg.seed)
  d, c, nd = cfg.dim, cfg.num_classes, cfg.num_domains
  centres = cfg.spread * rng.standard_normal((nd, d))
  rules = rng.standard_normal((nd, c, d))
  centres[2] = centres[0]
  centres[1] = centres[0] + 0.5 * rng.standard_normal(d)
  rules[2] = rules[0]
  rules[1] = _rotate(rules[0], cfg.rotation, rng)

  def draw(domain, count):
    x = centres[domain] + rng.standard_normal((count, d))
    y = np.argmax((x - centres[domain]) @ rules[domain].T, axis=-1)
    if domain == 2:
      flip = rng.uniform(size=count) < cfg.noise
      y = np.where(flip, rng.integers(0, c, count), y)
    return {"x": jnp.asarray(x, dtype), "y": jnp.asarray(y, jnp.int32)}

  parts = [draw(i, cfg.per_domain) for i in range(nd)]
  pool = {key: jnp.concatenate([p[key] for p in parts]) for key in ("x", "y")}
  domain = jnp.asarray(np.repeat(np.arange(nd), cfg.per_domain), jnp.int32)
  return {"pool": pool, "domain": domain, "target": draw(0, cfg.target_size),
          "heldout": draw(0, cfg.heldout_size)}


def mlp_init(seed: int, dim: int, hidden: int, num_classes: int,
             dtype: Any = jnp.float32) -> dict[str, jax.Array]:
  """Parameters of x -> W2 tanh(W1 x + b1) + b2 (fan-in scaled normal init, NumPy seed)."""
  rng = np.random.default_rng(seed)
  return {"w1": jnp.asarray(rng.standard_normal((dim, hidden)) / np.sqrt(dim), dtype),
          "b1": jnp.zeros((hidden,), dtype),
          "w2": jnp.asarray(rng.standard_normal((hidden, num_classes)) / np.sqrt(hidden), dtype),
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
