"""The small GPT: token layout, causality of the CoT buffer, the training step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tnx.icl import gpt, task

CFG = gpt.GPTConfig(d=3, d_model=16, n_layers=1, n_heads=2)


def _prompts(batch=4, n=5, seed=0):
  return task.sample_prompts(jax.random.key(seed), batch, n, np.eye(3), dtype=jnp.float32)


def test_sequence_layout():
  p = _prompts(2, 3)
  est = jnp.ones((2, 2, 3))
  tokens, types = gpt.sequence(p.x_BxNxD, p.y_BxN, est)
  assert tokens.shape == (2, 8, 3)
  np.testing.assert_array_equal(tokens[:, 0:6:2], p.x_BxNxD)
  np.testing.assert_array_equal(tokens[:, 1:6:2, 0], p.y_BxN)
  np.testing.assert_array_equal(tokens[:, 1:6:2, 1:], 0)
  np.testing.assert_array_equal(tokens[:, 6:], est)
  np.testing.assert_array_equal(types, [0, 1, 0, 1, 0, 1, 2, 2])


def test_buffered_cot_equals_growing_sequence():
  """The fixed buffer + causal mask gives the same estimates as re-running the model on the
  growing sequence (the definition of autoregressive CoT)."""
  model = gpt.ICLTransformer(CFG, rngs=nnx.Rngs(0))
  p = _prompts()
  w0 = jnp.zeros((4, 3))
  got = gpt.cot(model, p.x_BxNxD, p.y_BxN, w0, 3)
  est = w0[:, None]
  run = jax.jit(lambda m, tokens, types: m(tokens, types))
  for i in range(3):
    tokens, types = gpt.sequence(p.x_BxNxD, p.y_BxN, est)
    out = run(model, tokens, types)[:, -1]
    np.testing.assert_allclose(got[:, i], out, atol=1e-5)
    est = jnp.concatenate([est, out[:, None]], 1)


def test_train_step_lowers_the_loss_and_options_are_checked():
  model = gpt.ICLTransformer(CFG, rngs=nnx.Rngs(1))
  sampler = lambda key, b, n: task.sample_prompts(key, b, n, np.eye(3), dtype=jnp.float32)
  opts = gpt.GPTTrainOptions(n=5, batch=64, start="random", train_cot=2)
  state, opt_state, step, _ = gpt.make_train_step(model, optax.adam(3e-3), sampler, opts)
  losses = []
  for i in range(40):
    state, opt_state, loss = step(state, opt_state, jax.random.key(i))
    losses.append(float(loss))
  assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
  with pytest.raises(ValueError, match="start must be one of"):
    gpt.GPTTrainOptions(start="ones")
  with pytest.raises(ValueError, match="train_cot must be a positive integer"):
    gpt.GPTTrainOptions(train_cot=0)
  with pytest.raises(ValueError, match="tokens_BxLxd"):
    model(jnp.zeros((1, 4, 5)), jnp.zeros(4, int))
