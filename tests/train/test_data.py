"""Data pipeline tests: stable split, packing, synthetic tasks against brute force, exact
iterator resume."""

import numpy as np
import pytest

from tnx.train import data


def test_stdlib_split_is_stable_and_disjoint():
  root = data.stdlib_root()
  files = [f.relative_to(root).as_posix() for f in data.list_files(root, (".py",))]
  assert len(files) > 100
  val = {f for f in files if data.stable_fraction(f) < 0.02}
  assert 0 < len(val) < 0.1 * len(files)
  assert data.stable_fraction("os.py") == data.stable_fraction("os.py")
  stream = data.read_text_corpus("stdlib", "validation", max_bytes=50_000)
  assert stream.dtype == np.int32 and len(stream) == 50_000 and stream.max() < 256


def test_files_source_single_file_split(tmp_path):
  p = tmp_path / "a.txt"
  p.write_bytes(bytes(range(256)) * 4)
  tr = data.read_text_corpus("files", "train", path=str(p), val_fraction=0.25)
  va = data.read_text_corpus("files", "validation", path=str(p), val_fraction=0.25)
  assert len(tr) == 768 + 1 and len(va) == 256 + 1  # + separator
  np.testing.assert_array_equal(np.concatenate([tr[:-1], va[:-1]]), np.arange(1024) % 256)
  with pytest.raises(ValueError, match="data.path"):
    data.read_text_corpus("files", "train", path=str(tmp_path / "missing"))


def test_packing_windows():
  stream = np.arange(100, dtype=np.int32)
  src = data.PackedWindows(stream, 16)
  assert len(src) == 6
  ex = src[2]
  np.testing.assert_array_equal(ex["inputs"], np.arange(32, 48))
  np.testing.assert_array_equal(ex["targets"], np.arange(33, 49))


def test_mqar_answers_match_context():
  src = data.MQAR(seq_len=64, n_pairs=8, n_queries=6, vocab_size=64, seed=3)
  for i in range(5):
    ex = src[i]
    inputs = ex["inputs"]
    table = {int(inputs[2 * j]): int(inputs[2 * j + 1]) for j in range(8)}
    pos = np.flatnonzero(ex["weights"])
    assert len(pos) == 6
    for p in pos:
      assert table[int(inputs[p])] == int(ex["targets"][p])
  np.testing.assert_array_equal(src[4]["inputs"], src[4]["inputs"])


def test_needle_answer():
  ex = data.Needle(seq_len=40, vocab_size=32, seed=0)[7]
  inputs, target = ex["inputs"], ex["targets"][-1]
  key = inputs[-1]
  j = [t for t in range(len(inputs) - 3) if inputs[t] == 1 and inputs[t + 1] == key][0]
  assert inputs[j + 2] == target and ex["weights"].sum() == 1 and ex["weights"][-1] == 1


def test_iterator_resumes_at_same_position():
  src = data.PackedWindows(np.arange(5000, dtype=np.int32) % 251, 16)
  it = iter(data.batches(src, 4, seed=5))
  for _ in range(7):
    next(it)
  state = it.get_state()
  expected = [next(it)["inputs"] for _ in range(3)]
  fresh = iter(data.batches(src, 4, seed=5))
  fresh.set_state(state)
  for e in expected:
    np.testing.assert_array_equal(next(fresh)["inputs"], e)
  other = iter(data.batches(src, 4, seed=6))
  assert not np.array_equal(next(other)["inputs"], next(iter(data.batches(src, 4, seed=5)))[
      "inputs"])
