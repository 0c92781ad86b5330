"""Synthetic users on disk as Parquet, streamed chunk by chunk, and read back through grain.

Schema (format version 1), one row per synthetic user:

  user_id          int64                       0-based index of the user in the release
  epoch_{r}_topics fixed_size_list<int32>[K]   r = 0 .. W-1: the K raw slot draws of week r,
                                               as taxonomy topic ids (repeats possible: a
                                               week's set is their distinct values; pad it
                                               to K before simulating the API)

Schema metadata (utf-8 keys and values): `tnx.topics.format` = "1", `num_weeks`,
`num_slots`, `num_topics`, `num_types` and `seed`. One row group per written chunk.

This mirrors the public release's TFRecord features (user_id, epoch_r_topics) without the
all-ones epoch_r_weights. Memory while writing is O(chunk) whatever the number of users.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tnx import validation
from tnx.privacy.topics import model

FORMAT_VERSION = "1"


def schema(num_weeks: int, num_slots: int, metadata: dict | None = None) -> pa.Schema:
  fields = [pa.field("user_id", pa.int64())]
  fields += [pa.field(f"epoch_{r}_topics", pa.list_(pa.int32(), num_slots))
             for r in range(num_weeks)]
  meta = {"tnx.topics.format": FORMAT_VERSION, "num_weeks": str(num_weeks),
          "num_slots": str(num_slots), **{k: str(v) for k, v in (metadata or {}).items()}}
  return pa.schema(fields, metadata=meta)


def _table(user_ids_N: np.ndarray, topics_NxWxK: np.ndarray, sch: pa.Schema) -> pa.Table:
  n, w, k = topics_NxWxK.shape
  cols = [pa.array(np.asarray(user_ids_N, np.int64))]
  for r in range(w):
    flat = pa.array(np.ascontiguousarray(topics_NxWxK[:, r], np.int32).reshape(-1))
    cols.append(pa.FixedSizeListArray.from_arrays(flat, k))
  return pa.Table.from_arrays(cols, schema=sch)


class UserWriter:
  """Appends users to one Parquet file, a row group per `write` call (a context manager)."""

  def __init__(self, path: str, num_weeks: int, num_slots: int, metadata: dict | None = None,
               compression: str = "zstd"):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self.schema = schema(num_weeks, num_slots, metadata)
    self._writer = pq.ParquetWriter(path, self.schema, compression=compression)
    self.rows = 0

  def write(self, user_ids_N, topics_NxWxK) -> None:
    t = np.asarray(topics_NxWxK)
    validation.shape("topics", t, (len(user_ids_N), int(self.schema.metadata[b"num_weeks"]),
                                   int(self.schema.metadata[b"num_slots"])))
    self._writer.write_table(_table(np.asarray(user_ids_N), t, self.schema))
    self.rows += t.shape[0]

  def close(self) -> None:
    self._writer.close()

  def __enter__(self) -> UserWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def sample_to_parquet(key: jax.Array, mixture: model.TypeMixture, topic_ids: Sequence[int],
                      num_users: int, path: str, *, chunk_users: int = 1 << 16,
                      block_size: int = 4096, seed: int | None = None) -> int:
  """Samples `num_users` synthetic users and streams them to `path`; returns rows written.

  Users are those of `model.sample_slots(key, mixture, num_users, chunk_users, block_size)`,
  with topic indices mapped to the taxonomy ids `topic_ids` ([O], index -> id).
  """
  t, w, k, o = mixture.shape
  ids = np.asarray(topic_ids, np.int32)
  validation.shape("topic_ids", ids, (o,))
  meta = {"num_topics": o, "num_types": t, "seed": "" if seed is None else seed}
  with UserWriter(path, w, k, meta) as out:
    for start, slots, _ in model.sample_chunks(key, mixture, num_users, chunk_users,
                                               block_size):
      out.write(np.arange(start, start + slots.shape[0]), ids[slots])
    return out.rows


def _check_schema(path: str, sch: pa.Schema) -> tuple[int, int]:
  meta = sch.metadata or {}
  if meta.get(b"tnx.topics.format") != FORMAT_VERSION.encode():
    raise ValueError(f"path {path!r} is not a tnx synthetic-user Parquet file (format "
                     f"{FORMAT_VERSION}); schema metadata: {meta}")
  return int(meta[b"num_weeks"]), int(meta[b"num_slots"])


def _topics(table: pa.Table, num_weeks: int, num_slots: int) -> np.ndarray:
  cols = [table.column(f"epoch_{r}_topics").combine_chunks().flatten().to_numpy()
          for r in range(num_weeks)]
  return np.stack([c.reshape(-1, num_slots) for c in cols], axis=1)


def read_parquet(path: str) -> tuple[np.ndarray, np.ndarray]:
  """All users of a file: user_ids [N] int64 and topics [N, W, K] int32 taxonomy ids."""
  table = pq.read_table(path)
  w, k = _check_schema(path, table.schema)
  return table.column("user_id").to_numpy(), _topics(table, w, k)


class ParquetUserSource:
  """A grain random-access data source over synthetic-user Parquet files.

  `source[i]` is {"user_id": int64, "topics": [W, K] int32 taxonomy ids}; row groups are
  decoded on demand and the last one is cached, so sequential reads decode each once.
  Use with `grain.MapDataset.source(ParquetUserSource(paths))`.
  """

  def __init__(self, paths: str | Sequence[str]):
    self._paths = [paths] if isinstance(paths, str) else list(paths)
    if not self._paths:
      raise ValueError("paths must name at least one Parquet file")
    self._groups = []            # (path index, row group, first global row)
    total = 0
    shapes = set()
    for i, p in enumerate(self._paths):
      meta = pq.ParquetFile(p)
      shapes.add(_check_schema(p, meta.schema_arrow))
      for g in range(meta.num_row_groups):
        self._groups.append((i, g, total))
        total += meta.metadata.row_group(g).num_rows
    if len(shapes) > 1:
      raise ValueError(f"paths mix files of different (weeks, slots): {sorted(shapes)}")
    self._weeks, self._slots = shapes.pop()
    self._starts = np.array([g[2] for g in self._groups] + [total])
    self._len = total
    self._cached = (-1, None, None)

  def __len__(self) -> int:
    return self._len

  def _group(self, j: int):
    if self._cached[0] != j:
      i, g, _ = self._groups[j]
      table = pq.ParquetFile(self._paths[i]).read_row_group(g)
      self._cached = (j, table.column("user_id").to_numpy(),
                      _topics(table, self._weeks, self._slots))
    return self._cached[1], self._cached[2]

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not 0 <= index < self._len:
      raise IndexError(f"index {index} out of range for {self._len} users")
    j = int(np.searchsorted(self._starts, index, side="right")) - 1
    ids, topics = self._group(j)
    r = index - self._starts[j]
    return {"user_id": ids[r], "topics": topics[r]}

  def __repr__(self) -> str:
    return f"ParquetUserSource({self._paths!r}, users={self._len})"
