"""Proxy fine-tuning: evenly spaced checkpoints through tnx.train's Checkpointer, restored
exactly; evaluation per family."""

import jax
import numpy as np
import pytest
from flax import nnx

from tnx import sharding as shd
from tnx.selection.xmas import data, finetune, model


def test_checkpoint_steps():
  assert finetune.checkpoint_steps(42, 7) == [0, 7, 14, 21, 28, 35, 42]
  assert finetune.checkpoint_steps(10, 4) == [0, 3, 7, 10]
  assert finetune.checkpoint_steps(5, 1) == [5]
  assert finetune.checkpoint_steps(3, 4) == [0, 1, 2, 3]
  with pytest.raises(ValueError, match="num_checkpoints"):
    finetune.checkpoint_steps(3, 5)
  with pytest.raises(ValueError, match="num_checkpoints"):
    finetune.checkpoint_steps(3, 0)


def test_train_saves_and_restores_checkpoints(tmp_path):
  dcfg = data.ShapesVQAConfig(image_dim=8)
  vcfg = model.for_shapes_vqa(dcfg, d_model=16, n_layers=1, n_heads=2)
  pool = data.generate(0, 60, dcfg)
  tc = finetune.TrainConfig(epochs=2, batch_size=16, lr=3e-3)
  run = finetune.train(vcfg, pool, np.arange(len(pool["tokens"])), 0, tc,
                       checkpoint_dir=str(tmp_path / "ckpt"), num_checkpoints=4)
  total = len(run.losses)
  assert total == 2 * -(-len(pool["tokens"]) // 16)
  assert run.checkpoint_steps == finetune.checkpoint_steps(total, 4)
  assert np.mean(run.losses[-2:]) < run.losses[0]
  restored = finetune.load_checkpoints(run, vcfg, tc)
  assert len(restored) == 4
  init = nnx.to_pure_dict(model.init(vcfg, 0)[1])
  jax.tree.map(np.testing.assert_array_equal, restored[0][0], init)        # step 0 = init
  jax.tree.map(np.testing.assert_array_equal, restored[-1][0], run.params)  # last = final
  assert not np.allclose(np.asarray(jax.tree.leaves(restored[1][0])[0]),
                         np.asarray(jax.tree.leaves(restored[0][0])[0]))
  acc = finetune.accuracy_per_family(run, data.test_set(1, 4, dcfg), 5, batch_size=16,
                                     mesh=shd.make_mesh())
  assert acc.shape == (5,) and np.all((acc >= 0) & (acc <= 1))
  with pytest.raises(ValueError, match="indices"):
    finetune.train(vcfg, pool, np.zeros(0, int), 0, tc)
  # Continuing from given params (stage-1 style): the params survive the donated steps and
  # can start several runs.
  for seed in (1, 2):
    cont = finetune.train(vcfg, pool, np.arange(16), seed, tc, init_params=run.params)
    assert len(cont.losses) == 2
  assert cont.losses[0] < run.losses[0]
  with pytest.raises(ValueError, match="init_params"):
    finetune.train(vcfg, pool, np.arange(16), 0, tc, init_params={"w": np.zeros(2)})
