"""Covariance checks, prompt sampling, task mixtures and the embedding layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tnx.icl import task

LAM = np.diag([3.0, 1.0, 0.5, 0.2, 0.1])


@pytest.mark.parametrize("bad, match", [
    (np.array([[1.0, 0.5], [0.0, 1.0]]), "symmetric"),
    (np.diag([1.0, -0.1]), "positive definite"),
    (np.diag([1.0, 0.0]), "positive definite"),
    (np.ones((2, 3)), "square"),
    (np.array([[np.nan, 0], [0, 1.0]]), "finite"),
])
def test_check_cov_rejects_with_the_argument_name(bad, match):
  with pytest.raises(ValueError, match=f"lam_train.*{match}|lam_train must be"):
    task.check_cov("lam_train", bad)


def test_check_cov_dimension_and_singular_option():
  with pytest.raises(ValueError, match=r"sig must be \[3, 3\]"):
    task.check_cov("sig", np.eye(2), d=3)
  task.check_cov("fam", np.diag([1.0, 0.0]), allow_singular=True)
  with pytest.raises(ValueError, match="fam must be positive semi-definite"):
    task.check_cov("fam", np.diag([1.0, -1.0]), allow_singular=True)


def test_power_law_spectrum():
  lam = task.power_law_spectrum(10, 1.0, trace=10)
  np.testing.assert_allclose(lam.sum(), 10)
  np.testing.assert_allclose(lam[0] / lam[1], 2.0)
  short = task.power_law_spectrum(6, 0.5, support=3)
  np.testing.assert_array_equal(short[3:], 0)
  np.testing.assert_allclose(short[:3], np.arange(1, 4) ** -0.5)
  with pytest.raises(ValueError, match="support"):
    task.power_law_spectrum(4, 1.0, support=5)
  with pytest.raises(ValueError, match="d must be a positive integer"):
    task.power_law_spectrum(0, 1.0)


def test_sample_prompts_moments_and_labels():
  root = task.cov_sqrt(LAM)
  np.testing.assert_allclose(root @ root, LAM, atol=1e-12)
  p = task.sample_prompts(jax.random.key(0), 4000, 10, root, dtype=jnp.float64)
  np.testing.assert_allclose(p.y_BxN, np.einsum("bnd,bd->bn", p.x_BxNxD, p.w_BxD), atol=1e-12)
  x = np.asarray(p.x_BxNxD).reshape(-1, 5)
  emp = x.T @ x / len(x)
  se = np.sqrt((np.diag(LAM)[:, None] * np.diag(LAM)[None, :] + LAM**2) / len(x))
  assert np.all(np.abs(emp - LAM) < 5 * se)
  w = np.asarray(p.w_BxD)
  assert abs(np.mean(w**2) - 1) < 5 * np.sqrt(2 / w.size)
  with pytest.raises(ValueError, match="n must be a positive integer"):
    task.sample_prompts(jax.random.key(0), 2, 0, root)


def test_wishart_second_moment():
  """E[S^2] = (1 + 1/n) Lambda^2 + (tr Lambda / n) Lambda, within Monte Carlo error."""
  n, draws = 7, 100_000
  rng = np.random.default_rng(0)
  x = rng.standard_normal((draws, n, 5)) * np.sqrt(np.diag(LAM))
  s = np.einsum("bni,bnj->bij", x, x) / n
  s2 = s @ s
  exact = (1 + 1 / n) * LAM @ LAM + np.trace(LAM) / n * LAM
  se = s2.std(0) / np.sqrt(draws)
  assert np.all(np.abs(s2.mean(0) - exact) <= 5 * se + 1e-12)
  assert np.max(np.abs(s2.mean(0) - exact)) / np.max(exact) < 0.01


def test_task_mixture_frequencies_and_covariances():
  covs = np.stack([np.diag([2.0, 0.0]), np.diag([0.0, 1.0])])
  mix = task.TaskMixture(covs, [0.25, 0.75])
  p, t = mix.sample(jax.random.key(1), 4000, 3, dtype=jnp.float64)
  frac = float(jnp.mean(t == 1))
  assert abs(frac - 0.75) < 5 * np.sqrt(0.75 * 0.25 / 4000)
  x0 = np.asarray(p.x_BxNxD)[np.asarray(t) == 0]
  assert np.all(x0[..., 1] == 0) and abs(np.var(x0[..., 0]) - 2.0) < 0.15
  with pytest.raises(ValueError, match="probs_T must sum to 1"):
    task.TaskMixture(covs, [0.5, 0.6])
  with pytest.raises(ValueError, match=r"covs_TxDxD\[1\]"):
    task.TaskMixture(np.stack([np.eye(2), -np.eye(2)]), [0.5, 0.5])


def test_embed_layout():
  d, n = 3, 4
  p = task.sample_prompts(jax.random.key(2), 2, n, np.eye(d), dtype=jnp.float64)
  w0 = jnp.arange(6.0).reshape(2, 3)
  z = task.embed(p.x_BxNxD, p.y_BxN, w0)
  assert z.shape == (2, 2 * d + 2, n + 1)
  np.testing.assert_array_equal(z[:, :d, :n], p.x_BxNxD.transpose(0, 2, 1))
  np.testing.assert_array_equal(z[:, d, :n], p.y_BxN)
  np.testing.assert_array_equal(z[:, d + 1:, :n], 0)
  np.testing.assert_array_equal(z[:, :d + 1, n], 0)
  np.testing.assert_array_equal(z[:, task.estimate_rows(d), n], w0)
  np.testing.assert_array_equal(z[:, -1, n], 1)
  with pytest.raises(ValueError, match="w0_BxD"):
    task.embed(p.x_BxNxD, p.y_BxN, jnp.zeros((2, 4)))
