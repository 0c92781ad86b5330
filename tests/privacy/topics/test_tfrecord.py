"""TFRecord shards without TensorFlow: framing, crc32c, and tf.train.Example decoding."""

import struct

import numpy as np
import pytest

from tnx.privacy.topics import tfrecord


def test_crc32c_known_value_with_and_without_extension(monkeypatch):
  assert tfrecord.crc32c(b"123456789") == 0xE3069283        # RFC 3720 check value
  monkeypatch.setattr(tfrecord, "google_crc32c", None)
  assert tfrecord.crc32c(b"123456789") == 0xE3069283
  assert tfrecord.crc32c(b"") == 0


def _varint(v):
  out = b""
  while True:
    b, v = v & 0x7F, v >> 7
    out += bytes([b | (0x80 if v else 0)])
    if not v:
      return out


def _ld(field, payload):           # length-delimited field
  return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _feature_entry(name, feature):
  return _ld(1, _ld(1, name.encode()) + _ld(2, feature))


def _hand_built_example(uid, topics):
  """tf.train.Example bytes written from the protobuf wire format by hand."""
  entries = _feature_entry("user_id", _ld(1, _ld(1, uid.encode())))
  for r, row in enumerate(topics):
    entries += _feature_entry(f"epoch_{r}_topics", _ld(3, _ld(1, b"".join(map(_varint, row)))))
    entries += _feature_entry(f"epoch_{r}_weights",
                              _ld(2, _ld(1, struct.pack("<5f", *[1.0] * 5))))
  return _ld(1, entries)


def test_decode_hand_built_example():
  topics = np.array([[1, 243, 299, 243, 7], [5, 6, 7, 8, 9], [1, 1, 1, 1, 1], [2, 3, 4, 5, 6]])
  uid, got, weights = tfrecord.decode_user(_hand_built_example("user-17", topics))
  assert uid == "user-17"
  np.testing.assert_array_equal(got, topics)
  np.testing.assert_array_equal(weights, np.ones((4, 5)))


def test_framing_matches_hand_computed_and_round_trips(tmp_path):
  path = str(tmp_path / "shard-00000-of-00001.tfrecord")
  topics = np.arange(3 * 20).reshape(3, 4, 5) + 1
  tfrecord.write_users(path, ["a", "b", "c"], topics)
  raw = open(path, "rb").read()
  length = struct.unpack("<Q", raw[:8])[0]
  c = tfrecord.crc32c(raw[:8])
  assert struct.unpack("<I", raw[8:12])[0] == (((c >> 15) | (c << 17)) + 0xA282EAD8) % 2 ** 32
  assert tfrecord.decode_user(raw[12:12 + length])[0] == "a"
  ids, back = tfrecord.read_users(path)
  assert ids == ["a", "b", "c"]
  np.testing.assert_array_equal(back, topics)


def test_corrupt_and_truncated_records_raise(tmp_path):
  path = tmp_path / "s.tfrecord"
  tfrecord.write_users(str(path), ["a"], np.ones((1, 4, 5), int))
  raw = bytearray(path.read_bytes())
  raw[20] ^= 0xFF
  (tmp_path / "bad.tfrecord").write_bytes(bytes(raw))
  with pytest.raises(ValueError, match="corrupt data"):
    tfrecord.read_users(str(tmp_path / "bad.tfrecord"))
  (tmp_path / "short.tfrecord").write_bytes(path.read_bytes()[:-3])
  with pytest.raises(ValueError, match="truncated"):
    tfrecord.read_users(str(tmp_path / "short.tfrecord"))
  (tmp_path / "empty.tfrecord").write_bytes(b"")
  with pytest.raises(ValueError, match="no users"):
    tfrecord.read_users(str(tmp_path / "empty.tfrecord"))


def test_missing_feature_raises():
  data = _hand_built_example("u", np.ones((3, 5), int))       # only 3 epochs
  with pytest.raises(ValueError, match="epoch_3_topics"):
    tfrecord.decode_user(data, num_weeks=4)
