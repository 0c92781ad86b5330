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
  # all 256 byte values (a NUL among them): binary, so allowed explicitly
  tr = data.read_text_corpus("files", "train", path=str(p), val_fraction=0.25, allow_binary=True)
  va = data.read_text_corpus("files", "validation", path=str(p), val_fraction=0.25,
                             allow_binary=True)
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
  again = data.MQAR(seq_len=64, n_pairs=8, n_queries=6, vocab_size=64, seed=3)
  np.testing.assert_array_equal(again[4]["inputs"], src[4]["inputs"])   # a function of (seed, i)
  other = data.MQAR(seq_len=64, n_pairs=8, n_queries=6, vocab_size=64, seed=4)
  assert not np.array_equal(other[4]["inputs"], src[4]["inputs"])


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


def _cfg(*extra):
  from tnx.train import config
  cfg, _ = config.parse_args(["--config=lm:smoke", *extra])
  return cfg


def test_path_implies_files_or_is_refused(tmp_path):
  from tnx.train import config
  (tmp_path / "a.txt").write_text("hello world\n" * 2000)
  cfg = _cfg(f"--config.data.path={tmp_path / 'a.txt'}")
  config.validate(cfg)
  assert cfg.data.source == "files"
  with pytest.raises(ValueError, match=r"data.path=.* is set but data.source='mqar'"):
    config.validate(_cfg(f"--config.data.path={tmp_path}", "--config.data.source=mqar"))
  with pytest.raises(ValueError, match=r"data.path=.*missing.* does not exist"):
    config.validate(_cfg(f"--config.data.path={tmp_path / 'missing'}"))


def test_short_file_names_file_split_and_fix(tmp_path):
  p = tmp_path / "short.txt"
  p.write_text("x" * 2000)                   # validation split: last 2% = 40 bytes
  cfg = _cfg(f"--config.data.path={p}")
  with pytest.raises(ValueError, match=rf"data.path='{p}': the validation split has 41 tokens, "
                                       r"fewer than data.seq_len \+ 1 = 65 .* a larger "
                                       r"data.val_fraction .* or a smaller data.seq_len"):
    data.make_source(cfg.data, cfg.data.seq_len, 256, "validation")
  assert len(data.make_source(cfg.data, cfg.data.seq_len, 256, "train")) == 30


def test_directory_of_few_files_names_the_split_and_the_fix(tmp_path):
  for name in ("a.txt", "b.txt", "c.txt"):
    (tmp_path / name).write_text(name * 500)
  fractions = sorted(data.stable_fraction(n) for n in ("a.txt", "b.txt", "c.txt"))
  assert fractions[0] > 0.02                 # so no file falls into the 2% validation split
  with pytest.raises(ValueError, match=rf"none of its 3 files falls into the validation split "
                                       rf".*raise data.val_fraction above {fractions[0]:.3f}"):
    data.read_text_corpus("files", "validation", path=str(tmp_path), suffixes=(".txt",))
  stream = data.read_text_corpus("files", "validation", path=str(tmp_path), suffixes=(".txt",),
                                 val_fraction=fractions[0] + 1e-3)
  assert len(stream) == len("a.txt") * 500 + 1
  with pytest.raises(ValueError, match=r"holds no files ending in \['.md'\]"):
    data.read_text_corpus("files", "train", path=str(tmp_path), suffixes=(".md",))


def test_binary_files_are_refused_or_skipped(tmp_path):
  blob = tmp_path / "model.bin"
  blob.write_bytes(bytes(range(256)) * 40)
  with pytest.raises(ValueError, match=r"model.bin' does not look like text: it contains NUL "
                                       r"bytes \(first at byte 0\).*allow_binary=true"):
    data.read_text_corpus("files", "train", path=str(blob))
  assert len(data.read_text_corpus("files", "train", path=str(blob), allow_binary=True)) > 0
  latin = tmp_path / "latin.txt"
  latin.write_bytes("caf\xe9 ".encode("latin-1") * 100)
  assert "not UTF-8" in data.binary_reason(latin.read_bytes())
  d = tmp_path / "dir"
  d.mkdir()
  (d / "good.txt").write_text("text " * 300)
  (d / "bad.txt").write_bytes(b"\x00\x01" * 300)
  with pytest.warns(UserWarning, match=r"train split: skipped 1 binary file\(s\) \(bad.txt\)"):
    stream = data.read_text_corpus("files", "train", path=str(d), suffixes=(".txt",),
                                   val_fraction=1e-9)
  assert len(stream) == 1500 + 1


def test_empty_splits_name_the_file_the_split_and_the_fix(tmp_path):
  import re
  tiny = tmp_path / "tiny.txt"
  tiny.write_text("")                        # (a non-empty file gives each split >= 1 byte)
  with pytest.raises(ValueError, match=re.escape(
      f"data.path='{tiny}': the validation split (its last 2% of bytes) is empty; use a longer "
      "file or a larger data.val_fraction")):
    data.read_text_corpus("files", "validation", path=str(tiny))
  blobs = tmp_path / "blobs"
  blobs.mkdir()
  for name in ("a.txt", "b.txt", "c.txt", "d.txt"):
    (blobs / name).write_bytes(b"\x00\x01" * 10)
  with pytest.warns(UserWarning, match="skipped 4 binary"), pytest.raises(
      ValueError, match=re.escape(f"data.path='{blobs}': every file of the train split (4: "
                                  "a.txt, b.txt, c.txt, ...) looks binary and was skipped; add "
                                  "text files or pass --config.data.allow_binary=true")):
    data.read_text_corpus("files", "train", path=str(blobs), suffixes=(".txt",),
                          val_fraction=1e-9)
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "a.txt").write_text("")
  with pytest.raises(ValueError, match=re.escape(
      f"data.path='{empty}': the 1 file(s) of the train split are empty; add text to them, or "
      "change data.val_fraction")):
    data.read_text_corpus("files", "train", path=str(empty), suffixes=(".txt",),
                          val_fraction=1e-9)


def test_short_validation_split_of_a_directory_names_the_fix(tmp_path):
  """A directory's validation split holds whole files: too little of it names the directory,
  the split and the fix (not the single-file 'last bytes' rule)."""
  names = [f"f{i}.txt" for i in range(8)]
  held = min(names, key=lambda n: data.stable_fraction(n))
  for n in names:
    (tmp_path / n).write_text("y" * (10 if n == held else 5000))
  frac = data.stable_fraction(held) + 1e-6
  assert all(data.stable_fraction(n) > frac for n in names if n != held)
  cfg = _cfg(f"--config.data.path={tmp_path}", "--config.data.suffixes=.txt",
             f"--config.data.val_fraction={frac}")
  with pytest.raises(ValueError, match=rf"data.path='{tmp_path}': the validation split has 11 "
                                       r"tokens, .* a larger data.val_fraction \(the validation "
                                       r"split is whole files, chosen by a hash of their path\)"):
    data.make_source(cfg.data, cfg.data.seq_len, 256, "validation")
  assert len(data.make_source(cfg.data, cfg.data.seq_len, 256, "train")) > 0
