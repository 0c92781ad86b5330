"""`select(...)`: Influence Distillation end to end, for any loss and parameter pytree.

Pipeline (Nikdan et al., "Efficient Data Selection at Scale via Influence Distillation",
arXiv 2505.19051, Sec. 3-4):

1. embeddings E of the pool (JVP embeddings by default, computed by the caller or a callable);
2. l landmarks chosen on E (random / k-means++ / farthest point);
3. exact per-sample gradients of the landmarks over the parameter subset, preconditioned by the
   optimizer's affine form `a` (Adam; 1 for SGD/GD), optionally unit-normalized and sketched;
   per-example target gradients (raw, normalized/sketched alike);
4. landmark influences p_L = G_L u with u the mean target gradient (second order:
   u = g_T - lr H_T b), or one column per target example for round-robin;
5. kernel-ridge propagation p_hat = C p_L to all n samples;
6. selection: robust weights on the scaled simplex {w >= 0, sum w = n} with the L2 strength
   searched for exactly k non-zeros (first order: projection; second order: the QP with
   Q_hat = C Q_L C^T, Q_L = (1/n) G_L H_T G_L^T from l Hessian-vector products), or
   round-robin over target examples (then every chosen sample has weight n/k).

With `num_landmarks=None` (or the pool size) every sample is a landmark: the exact method, with
no embeddings and no propagation. With a `mesh` the pool is split over its `data` axis:
gradients, embeddings and propagation run where the rows live and only landmark statistics,
the top k + 1 scores (or m x k for round-robin) are gathered.

Where the paper leaves a choice open (both kernels, gradient normalization, target mode), it is
a `SelectionConfig` field; the defaults follow the paper's formulation (RBF kernel with the
median width and relative damping 1e-2, mean target gradient, unnormalized gradients). The
second-order variant needs exact (unsketched, unnormalized) gradients.

`prepare` runs the target-independent steps 1-3 (and the landmark Cholesky factorization) once,
`select_prepared` the rest for each target set; `select` is both in one call.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from tnx import validation
from tnx.selection.influence import grads as grads_lib
from tnx.selection.influence import krr as propagate_lib
from tnx.selection.influence import landmarks as landmarks_lib
from tnx.selection.influence import scores, targets, weights
from tnx.selection.influence.optimizer import AffineStep, gd_affine
from tnx.selection.influence.sketch import make_sketch


@dataclasses.dataclass(frozen=True)
class SelectionConfig:
  """Options of `select`.

  Attributes:
    k: budget, 1 <= k <= pool size.
    num_landmarks: l, 1 <= l <= pool size; None = every sample (exact, no propagation).
    landmarks: 'random' | 'kmeans++' | 'farthest'.
    kernel: 'rbf' | 'linear' (propagation kernel).
    damp: relative ridge delta > 0 (times the mean kernel diagonal).
    sigma: RBF width > 0; None = median pairwise landmark distance.
    sketch: 'none' | 'rademacher' | 'srht' gradient projection.
    sketch_dim: K of the sketch.
    normalize: unit-normalize each gradient before sketching (cosine scores).
    target_mode: 'mean' | 'round_robin'.
    order: 'first' | 'second' (second: QP with Hessian-vector products; mean target only).
    chunk_size: examples per vectorized chunk of per-example work.
    qp_steps: FISTA iteration cap of the second-order QP.
    seed: landmark choice and round-robin order.
    sketch_seed: the gradient sketch (kept apart from `seed` so that runs with different seeds
      share one compiled per-example function).
  """

  k: int
  num_landmarks: int | None = 4096
  landmarks: str = "random"
  kernel: str = "rbf"
  damp: float = 1e-2
  sigma: float | None = None
  sketch: str = "none"
  sketch_dim: int = 4096
  normalize: bool = False
  target_mode: str = "mean"
  order: str = "first"
  chunk_size: int = 32
  qp_steps: int = 3000
  seed: int = 0
  sketch_seed: int = 0

  def __post_init__(self):
    validation.positive_int("k", self.k)
    if self.num_landmarks is not None:
      validation.positive_int("num_landmarks", self.num_landmarks)
    validation.one_of("landmarks", self.landmarks, landmarks_lib.METHODS)
    validation.one_of("kernel", self.kernel, propagate_lib.KERNELS)
    validation.positive("damp", self.damp)
    if self.sigma is not None:
      validation.positive("sigma", self.sigma)
    validation.one_of("sketch", self.sketch, ("none", "rademacher", "srht"))
    validation.positive_int("sketch_dim", self.sketch_dim)
    validation.one_of("target_mode", self.target_mode, targets.MODES)
    validation.one_of("order", self.order, ("first", "second"))
    validation.positive_int("chunk_size", self.chunk_size)
    validation.positive_int("qp_steps", self.qp_steps)
    if self.order == "second":
      if self.target_mode != "mean":
        raise ValueError("order='second' needs target_mode='mean' (the QP is over the mean "
                         f"target), got target_mode={self.target_mode!r}")
      if self.sketch != "none" or self.normalize:
        raise ValueError("order='second' needs exact gradients: sketch='none' and "
                         f"normalize=False, got sketch={self.sketch!r}, normalize="
                         f"{self.normalize!r}")


@dataclasses.dataclass
class Selection:
  """indices [k] (chosen samples), weights [k] (their weights; sum n), diagnostics."""

  indices: np.ndarray
  weights: np.ndarray
  diagnostics: dict[str, Any]


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn())
  return out, time.perf_counter() - t0


@dataclasses.dataclass
class PreparedPool:
  """The target-independent part of a selection (steps 1-3 and the landmark factorization):
  reuse it for several target sets (`select_prepared`)."""

  config: SelectionConfig
  loss_fn: grads_lib.LossFn
  params: Any
  subset: grads_lib.ParamSubset
  step: AffineStep
  grad_fn: Callable[..., jax.Array]
  n: int
  exact: bool
  landmarks: jax.Array
  embeddings: jax.Array | None
  landmark_grads: jax.Array
  fit: propagate_lib.KRRFit | None
  mesh: Mesh | None
  seconds: dict[str, float]


def prepare(loss_fn: grads_lib.LossFn, params: Any, pool: Any, config: SelectionConfig, *,
            step: AffineStep | None = None,
            embeddings: jax.Array | Callable[[Any], jax.Array] | None = None,
            subset: grads_lib.ParamSubset | None = None, mesh: Mesh | None = None
            ) -> PreparedPool:
  """Embeddings, landmarks, landmark gradients and the kernel factorization for `pool`.

  Args:
    loss_fn: (params, one example) -> scalar loss phi(theta; z).
    params: parameter pytree theta at selection time (after warm-up).
    pool: pytree of arrays with a leading example axis (n >= 1 rows).
    config: SelectionConfig.
    step: the next optimizer step's affine form (optimizer.adam_affine / sgd_affine /
      gd_affine); default gradient descent with lr 1 (first order is lr-free).
    embeddings: E [n, e] or a callable pool -> E (needed unless every sample is a landmark).
    subset: parameter subset of the gradients (default all parameters).
    mesh: split the pool over this mesh's `data` axis.
  """
  n = grads_lib.num_examples(pool, "pool")
  cfg = config
  weights.check_budget(cfg.k, n)
  exact = cfg.num_landmarks is None or cfg.num_landmarks == n
  if not exact:
    landmarks_lib.check_num_landmarks(cfg.num_landmarks, n)
  if cfg.order == "second" and step is None:
    raise ValueError("order='second' needs the optimizer step (step=...): its learning rate "
                     "scales the second-order term")
  subset = subset or grads_lib.ParamSubset(params)
  step = step or gd_affine(params, 1.0)
  a_P = None if step.kind == "gd" else subset.flatten(step.a)
  k_land = jax.random.split(jax.random.key(cfg.seed))[0]
  sketch = make_sketch(cfg.sketch, subset.size, cfg.sketch_dim, cfg.sketch_seed)
  grad_fn = grads_lib.per_example_grad_fn(loss_fn, subset, sketch=sketch,
                                          normalize=cfg.normalize, chunk_size=cfg.chunk_size,
                                          mesh=mesh)
  seconds: dict[str, float] = {}
  e_NxE, fit = None, None
  if exact:
    idx = jnp.arange(n)
  else:
    if embeddings is None:
      raise ValueError("embeddings (an [n, e] array or a callable pool -> embeddings) are "
                       f"needed with num_landmarks={cfg.num_landmarks} < pool size {n}")
    if callable(embeddings):
      e_NxE, seconds["embed"] = _timed(lambda: embeddings(pool))
    else:
      e_NxE = jnp.asarray(embeddings)
    validation.shape("embeddings", e_NxE, (n, None))
    idx, seconds["landmarks"] = _timed(lambda: landmarks_lib.choose_landmarks(
        cfg.landmarks, k_land, n, cfg.num_landmarks, e_NxE))
    fit, seconds["factor"] = _timed(lambda: propagate_lib.fit_krr(
        jnp.take(e_NxE, idx, axis=0), kernel=cfg.kernel, damp=cfg.damp, sigma=cfg.sigma,
        seed=cfg.seed))
  land = pool if exact else grads_lib.take_examples(pool, idx)
  g_LxP, seconds["landmark_grads"] = _timed(lambda: grad_fn(params, land, a_P))
  return PreparedPool(cfg, loss_fn, params, subset, step, grad_fn, n, exact, idx, e_NxE,
                      g_LxP, fit, mesh, seconds)


def select_prepared(prep: PreparedPool, target: Any) -> Selection:
  """Steps 3-6 for one target set on a prepared pool (see `select`)."""
  cfg, n, step = prep.config, prep.n, prep.step
  m = grads_lib.num_examples(target, "target")
  k = weights.check_budget(cfg.k, n)
  k_rr = jax.random.split(jax.random.key(cfg.seed), 3)[2]
  seconds = dict(prep.seconds)
  diag: dict[str, Any] = {"seconds": seconds, "pool_size": n, "target_size": m}
  g_LxP = prep.landmark_grads
  g_MxP, seconds["target_grads"] = _timed(lambda: prep.grad_fn(prep.params, target, None))

  # 4. landmark influences
  hvp = None
  if cfg.order == "second":
    hvp = grads_lib.flat_hvp_fn(grads_lib.mean_loss_fn(prep.loss_fn, target), prep.params,
                                prep.subset)
  t0 = time.perf_counter()
  if cfg.target_mode == "mean":
    u_P = jnp.mean(g_MxP, axis=0)
    if hvp is not None:
      u_P = scores.second_order_target(u_P, hvp, prep.subset.flatten(step.b), step.lr)
    p_l = scores.first_order_scores(g_LxP, u_P)
  else:
    p_l = g_LxP @ g_MxP.T

  # 5. propagation
  if prep.exact:
    p_hat = p_l
  else:
    p_hat = propagate_lib.propagate(prep.fit, prep.embeddings, p_l, mesh=prep.mesh)
    diag.update(sigma=float(prep.fit.sigma), ridge=float(prep.fit.ridge))
  p_hat = jax.block_until_ready(p_hat)
  seconds["propagate"] = time.perf_counter() - t0

  # 6. selection
  t0 = time.perf_counter()
  lam = None
  if cfg.target_mode == "round_robin":
    chosen = targets.round_robin(p_hat, k, k_rr)
    w = np.full(k, n / k)
  elif cfg.order == "first":
    chosen, w, lam = weights.robust_first_order(p_hat, k)
  else:
    q_l = jax.jit(lambda g: scores.interaction_matrix(g, hvp, n))(g_LxP)
    if prep.exact:
      q_matvec = lambda v: q_l @ v
    else:
      c_NxL = prep.fit.coefficients(prep.embeddings)
      q_matvec = lambda v: c_NxL @ (q_l @ (c_NxL.T @ v))
    chosen, w, lam = weights.robust_qp(p_hat, q_matvec, float(step.lr), k, steps=cfg.qp_steps)
    diag["q_landmarks"] = q_l
  seconds["select"] = time.perf_counter() - t0
  num_l = int(prep.landmarks.shape[0])
  diag.update(landmarks=np.asarray(prep.landmarks), p_landmarks=p_l, scores=p_hat, lam=lam,
              counts={"landmark_grads": num_l, "target_grads": m,
                      "embedded": 0 if prep.exact else n,
                      "hvps": 0 if hvp is None else num_l + 1},
              exact=prep.exact)
  return Selection(np.asarray(chosen), np.asarray(w), diag)


def select(loss_fn: grads_lib.LossFn, params: Any, pool: Any, target: Any,
           config: SelectionConfig, *, step: AffineStep | None = None,
           embeddings: jax.Array | Callable[[Any], jax.Array] | None = None,
           subset: grads_lib.ParamSubset | None = None, mesh: Mesh | None = None
           ) -> Selection:
  """Selects `config.k` samples of `pool` for the target examples `target`.

  Args: as `prepare`, plus target: a pytree of arrays with a leading axis of m >= 1 examples.
  Returns:
    Selection with diagnostics: landmarks, p_landmarks, scores (p_hat [n] or [n, m]), lam,
    sigma, ridge, seconds per phase, and counts of gradient and embedding evaluations.
  """
  grads_lib.num_examples(target, "target")
  prep = prepare(loss_fn, params, pool, config, step=step, embeddings=embeddings,
                 subset=subset, mesh=mesh)
  return select_prepared(prep, target)
