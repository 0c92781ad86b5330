"""Training the LSA with optax on fresh prompts reaches the closed-form optimum."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tnx.icl import lsa, task, theory, train_lsa


def _rel(a, b):
  return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


def test_single_task_training_reaches_gamma_inverse():
  """SGD, cosine schedule, 3000 steps of 256 fresh prompts: within 5% (relative Frobenius)
  of Gamma^{-1}, and the training loss is near the population minimum."""
  lam, n = np.diag([2.0, 1.0, 0.4]), 10
  cfg = train_lsa.LSATrainConfig(n=n, steps=3000, batch=256, lr=0.05, chunk=3000)
  params, hist = train_lsa.train_lsa(jax.random.key(0), lam, cfg, dtype=jnp.float64)
  target = theory.optimum_preconditioner(lam, n)
  assert _rel(lsa.preconditioner(params), target) < 0.05
  assert hist[-1] < 1.1 * train_lsa.population_loss(target, lam, n)
  assert train_lsa.population_loss(target, lam, n) < train_lsa.population_loss(
      1.05 * target, lam, n)


def test_mixture_training_reaches_the_multitask_optimum():
  mix = task.TaskMixture(np.stack([np.diag([2.0, 1.0, 0.1]), np.diag([0.1, 1.0, 2.0])]),
                         [0.3, 0.7])
  cfg = train_lsa.LSATrainConfig(n=8, steps=3000, batch=256, lr=0.05, chunk=3000)
  params, _ = train_lsa.train_lsa(jax.random.key(1), mix, cfg, dtype=jnp.float64)
  target = theory.mixture_preconditioner(mix.covs, mix.probs, 8)
  assert _rel(lsa.preconditioner(params), target) < 0.05
  # and not the single-task optimum of the averaged covariance
  assert _rel(theory.optimum_preconditioner(mix.covs.T @ mix.probs, 8), target) > 0.1


def test_config_errors():
  with pytest.raises(ValueError, match="optimizer must be one of"):
    train_lsa.LSATrainConfig(optimizer="lbfgs")
  with pytest.raises(ValueError, match="n must be a positive integer"):
    train_lsa.LSATrainConfig(n=0)
  with pytest.raises(ValueError, match="multiple of chunk"):
    train_lsa.LSATrainConfig(steps=1000, chunk=300)
