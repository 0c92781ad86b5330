"""The release's synthetic-user TFRecord shards, read and written without TensorFlow.

TFRecord framing, per record: uint64 length (little endian), uint32 masked crc32c of those 8
bytes, the data, uint32 masked crc32c of the data; mask(c) = ((c >> 15) | (c << 17)) +
0xa282ead8 (mod 2^32). Each record of the release is a serialized `tf.train.Example` with
features user_id (bytes), epoch_r_topics (5 int64 topic ids, raw slot draws) and
epoch_r_weights (5 floats, all 1) for r = 0..3.

The Example message is built at import from a descriptor with the `protobuf` package (the
same wire format as TensorFlow's example.proto); crc32c uses `google-crc32c` when installed
(the optional extra `tnx[topics]`) and a table-driven pure-Python version otherwise (slow, but
the same result).
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

try:
  import google_crc32c
except ImportError:        # optional extra tnx[topics]
  google_crc32c = None

_MASK_DELTA = 0xA282EAD8


@functools.lru_cache(maxsize=1)
def _crc_table() -> tuple[int, ...]:
  table = []
  for i in range(256):
    c = i
    for _ in range(8):
      c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1      # reflected Castagnoli polynomial
    table.append(c)
  return tuple(table)


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli) of `data`."""
  if google_crc32c is not None:
    return int(google_crc32c.value(bytes(data)))
  table, c = _crc_table(), 0xFFFFFFFF
  for byte in data:
    c = table[(c ^ byte) & 0xFF] ^ (c >> 8)
  return c ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
  c = crc32c(data)
  return (((c >> 15) | (c << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def read_records(path: str, verify: bool = True) -> Iterator[bytes]:
  """Yields the records of one TFRecord file; ValueError on a truncated or corrupt record."""
  with open(path, "rb") as f:
    index = 0
    while header := f.read(12):
      if len(header) < 12:
        raise ValueError(f"path {path!r}: truncated header of record {index}")
      length, length_crc = struct.unpack("<QI", header)
      if verify and masked_crc(header[:8]) != length_crc:
        raise ValueError(f"path {path!r}: corrupt length of record {index}")
      data, footer = f.read(length), f.read(4)
      if len(data) < length or len(footer) < 4:
        raise ValueError(f"path {path!r}: truncated record {index}")
      if verify and masked_crc(data) != struct.unpack("<I", footer)[0]:
        raise ValueError(f"path {path!r}: corrupt data of record {index}")
      yield data
      index += 1


def write_records(path: str, records: Iterable[bytes]) -> int:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  n = 0
  with open(path, "wb") as f:
    for data in records:
      header = struct.pack("<Q", len(data))
      f.write(header + struct.pack("<I", masked_crc(header)) + data
              + struct.pack("<I", masked_crc(data)))
      n += 1
  return n


@functools.lru_cache(maxsize=1)
def example_class():
  """The `tf.train.Example` message class, built from a descriptor (no TensorFlow)."""
  from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

  fd = descriptor_pb2.FileDescriptorProto(name="tnx_tf_example.proto", package="tnx_tf",
                                          syntax="proto3")
  f = descriptor_pb2.FieldDescriptorProto
  rep, opt = f.LABEL_REPEATED, f.LABEL_OPTIONAL

  def message(name, fields, nested=()):
    m = fd.message_type.add(name=name)
    for fname, number, ftype, label, type_name, oneof in fields:
      fld = m.field.add(name=fname, number=number, type=ftype, label=label)
      if type_name:
        fld.type_name = type_name
      if oneof is not None:
        fld.oneof_index = oneof
    for n in nested:
      m.nested_type.append(n)
    return m

  message("BytesList", [("value", 1, f.TYPE_BYTES, rep, None, None)])
  message("FloatList", [("value", 1, f.TYPE_FLOAT, rep, None, None)])
  message("Int64List", [("value", 1, f.TYPE_INT64, rep, None, None)])
  feat = message("Feature", [("bytes_list", 1, f.TYPE_MESSAGE, opt, ".tnx_tf.BytesList", 0),
                             ("float_list", 2, f.TYPE_MESSAGE, opt, ".tnx_tf.FloatList", 0),
                             ("int64_list", 3, f.TYPE_MESSAGE, opt, ".tnx_tf.Int64List", 0)])
  feat.oneof_decl.add(name="kind")
  entry = descriptor_pb2.DescriptorProto(name="FeatureEntry")
  entry.field.add(name="key", number=1, type=f.TYPE_STRING, label=opt)
  entry.field.add(name="value", number=2, type=f.TYPE_MESSAGE, label=opt,
                  type_name=".tnx_tf.Feature")
  entry.options.map_entry = True
  message("Features", [("feature", 1, f.TYPE_MESSAGE, rep, ".tnx_tf.Features.FeatureEntry",
                        None)], nested=[entry])
  message("Example", [("features", 1, f.TYPE_MESSAGE, opt, ".tnx_tf.Features", None)])
  pool = descriptor_pool.DescriptorPool()
  pool.Add(fd)
  return message_factory.GetMessageClass(pool.FindMessageTypeByName("tnx_tf.Example"))


def encode_user(user_id: str, topics_WxK: np.ndarray) -> bytes:
  """One user as a serialized Example (weights all 1, as in the release)."""
  ex = example_class()()
  feats = ex.features.feature
  feats["user_id"].bytes_list.value.append(str(user_id).encode())
  for r, row in enumerate(np.asarray(topics_WxK)):
    feats[f"epoch_{r}_topics"].int64_list.value.extend(int(t) for t in row)
    feats[f"epoch_{r}_weights"].float_list.value.extend([1.0] * len(row))
  return ex.SerializeToString()


def decode_user(data: bytes, num_weeks: int = 4, num_slots: int = 5
                ) -> tuple[str, np.ndarray, np.ndarray]:
  """(user_id, topics [W, K] int64 taxonomy ids, weights [W, K]) of one serialized Example."""
  ex = example_class()()
  ex.ParseFromString(data)
  feats = ex.features.feature
  if "user_id" not in feats:
    raise ValueError("record has no user_id feature")
  topics = np.zeros((num_weeks, num_slots), np.int64)
  weights = np.zeros((num_weeks, num_slots), np.float32)
  for r in range(num_weeks):
    for name, out, kind in ((f"epoch_{r}_topics", topics, "int64_list"),
                            (f"epoch_{r}_weights", weights, "float_list")):
      if name not in feats or len(getattr(feats[name], kind).value) != num_slots:
        raise ValueError(f"record {feats['user_id'].bytes_list.value[:1]}: feature {name} "
                         f"must hold {num_slots} values")
      out[r] = getattr(feats[name], kind).value
  return feats["user_id"].bytes_list.value[0].decode(), topics, weights


def read_users(paths: str | Sequence[str], num_weeks: int = 4, num_slots: int = 5,
               verify: bool = True) -> tuple[list[str], np.ndarray]:
  """All users of the shards: user ids and topics [N, W, K] int64 taxonomy ids."""
  paths = [paths] if isinstance(paths, str) else list(paths)
  ids, topics = [], []
  for p in paths:
    for rec in read_records(p, verify):
      uid, t, _ = decode_user(rec, num_weeks, num_slots)
      ids.append(uid)
      topics.append(t)
  if not topics:
    raise ValueError(f"paths {paths} hold no users")
  return ids, np.stack(topics)


def write_users(path: str, user_ids: Sequence[str], topics_NxWxK: np.ndarray) -> int:
  return write_records(path, (encode_user(u, t) for u, t in zip(user_ids, topics_NxWxK)))
