"""Parquet synthetic users: a sampled file round-trips, and grain reads it back."""

import grain
import jax
import numpy as np
import pyarrow.parquet as pq
import pytest

from tnx.privacy.topics import model, storage

T, W, K, O = 3, 4, 5, 9
TOPIC_IDS = np.arange(100, 100 + O) * 3       # taxonomy ids are not indices


@pytest.fixture(scope="module")
def mixture():
  return model.TypeMixture(np.random.default_rng(0).normal(size=(T, W, K, O)))


def test_sampled_parquet_round_trips(tmp_path, mixture):
  path = str(tmp_path / "users.parquet")
  key = jax.random.PRNGKey(7)
  n = storage.sample_to_parquet(key, mixture, TOPIC_IDS, 3000, path, chunk_users=1000,
                                block_size=256, seed=7)
  assert n == 3000
  slots, _ = model.sample_slots(key, mixture, 3000, chunk_users=1000, block_size=256)
  ids, topics = storage.read_parquet(path)
  np.testing.assert_array_equal(ids, np.arange(3000))
  np.testing.assert_array_equal(topics, TOPIC_IDS[slots])
  meta = pq.ParquetFile(path)
  assert meta.num_row_groups == 3
  assert meta.schema_arrow.metadata[b"num_types"] == b"3"
  assert meta.schema_arrow.field("epoch_3_topics").type.list_size == K


def test_grain_source(tmp_path, mixture):
  paths = [str(tmp_path / f"u{i}.parquet") for i in range(2)]
  for i, p in enumerate(paths):
    storage.sample_to_parquet(jax.random.PRNGKey(i), mixture, TOPIC_IDS, 1000, p,
                              chunk_users=1000, block_size=256)
  src = storage.ParquetUserSource(paths)
  assert len(src) == 2000
  _, second = storage.read_parquet(paths[1])
  np.testing.assert_array_equal(src[1450]["topics"], second[450])
  assert src[1450]["user_id"] == 450
  ds = grain.MapDataset.source(src).batch(500)
  batches = list(ds)
  assert len(batches) == 4 and batches[0]["topics"].shape == (500, W, K)
  with pytest.raises(IndexError):
    src[2000]


def test_rejects_foreign_parquet(tmp_path):
  import pyarrow as pa
  path = str(tmp_path / "other.parquet")
  pq.write_table(pa.table({"x": [1, 2]}), path)
  with pytest.raises(ValueError, match="not a tnx synthetic-user Parquet"):
    storage.read_parquet(path)
  with pytest.raises(ValueError, match="topic_ids"):
    storage.sample_to_parquet(jax.random.PRNGKey(0), model.TypeMixture(np.zeros((1, W, K, O))),
                              TOPIC_IDS[:-1], 10, str(tmp_path / "x.parquet"))
