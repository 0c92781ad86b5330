"""TNTConfig: invalid combinations raise ValueError naming the field; shared field names."""

import pytest

from tnx.tnt import TNTConfig


def test_invalid_configurations():
  with pytest.raises(ValueError, match="multiple of its chunk size"):
    TNTConfig(local_chunk_sizes=(8, 48), shard_length=64)
  with pytest.raises(ValueError, match="at least one memory"):
    TNTConfig(local_chunk_sizes=(), use_global=False)
  with pytest.raises(ValueError, match="qk_scope"):
    TNTConfig(qk_scope="sequence")
  with pytest.raises(ValueError, match="local_shard_lengths"):
    TNTConfig(local_chunk_sizes=(8,), local_shard_lengths=(16, 16))
  with pytest.raises(ValueError, match="num_heads"):
    TNTConfig(num_heads=0)
  for bad in (0.0, -1e-3, float("inf")):
    with pytest.raises(ValueError, match="global_lr_max must be a finite number > 0"):
      TNTConfig(global_lr_max=bad)


def test_shared_fields_and_derived_counts():
  cfg = TNTConfig(local_chunk_sizes=(4, 8), shard_length=16, local_shard_lengths=(8, 16))
  assert (cfg.num_locals, cfg.num_memories, cfg.shard_lengths) == (2, 3, (8, 16))
  assert not cfg.momentum and not cfg.forget and cfg.learn_init and cfg.learn_global_init
  assert TNTConfig(local_chunk_sizes=[2]).local_chunk_sizes == (2,)
