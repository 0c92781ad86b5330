"""Input pipelines with grain: text corpora packed into fixed-length windows, and synthetic
recall tasks. Every example is a dict of numpy arrays:

  inputs [L] int32, targets [L] int32 (inputs shifted by one), weights [L] float32 (loss mask).

Sources:
  'stdlib'  the running interpreter's standard-library .py files (always available offline),
            split into train/validation by a stable hash of the path relative to the stdlib root;
  'files'   any text file or directory (all files with `suffixes`), split the same way, or, for
            a single file, its last `val_fraction` of bytes as validation;
  'mqar'    multi-query associative recall; 'needle': single needle in a haystack.
Packing concatenates documents separated by a 0 byte and cuts windows of L + 1 tokens.
Per-process sharding slices the window index space by `jax.process_index()`.
"""

from __future__ import annotations

import hashlib
import sysconfig
import warnings
from pathlib import Path
from typing import Any, Protocol

import grain
import jax
import numpy as np

from tnx import validation
from tnx.train import paths

SEPARATOR = 0
SOURCES = ("stdlib", "files", "mqar", "needle")


class Tokenizer(Protocol):
  """What the pipeline needs from a tokenizer."""

  vocab_size: int

  def encode(self, text: bytes) -> np.ndarray: ...

  def decode(self, ids: np.ndarray) -> bytes: ...


class ByteTokenizer:
  """256-symbol byte-level tokenizer (one token per byte, so bits/token = bits/byte)."""

  vocab_size = 256

  def encode(self, text: bytes) -> np.ndarray:
    return np.frombuffer(bytes(text), dtype=np.uint8).astype(np.int32)

  def decode(self, ids: np.ndarray) -> bytes:
    return np.asarray(ids, dtype=np.uint8).tobytes()


def stable_fraction(key: str) -> float:
  """A number in [0, 1) that depends only on `key` (sha256), stable across runs and hosts."""
  return int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) / 16**12


def stdlib_root() -> Path:
  return Path(sysconfig.get_paths()["stdlib"])


def list_files(root: Any, suffixes: tuple[str, ...]) -> list[Any]:
  """Sorted files under `root` (a pathlib or epath directory) with one of `suffixes`,
  skipping site-/dist-packages and __pycache__."""
  out = []
  for dirpath, dirnames, filenames in paths.path(root).walk():
    dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "dist-packages",
                                                          "__pycache__"))
    out.extend(dirpath / f for f in filenames if f.endswith(suffixes))
  return sorted(out, key=str)


def binary_reason(data: bytes) -> str:
  """Why `data` does not look like text ('' if it does): a NUL byte (tnx's document
  separator) or invalid UTF-8 in its first 64 KiB."""
  head = data[:1 << 16]
  nul = head.find(b"\0")
  if nul >= 0:
    return f"it contains NUL bytes (first at byte {nul})"
  try:
    head.decode("utf-8")
  except UnicodeDecodeError as e:
    if e.start < len(head) - 4:  # a character cut at the window's end is fine
      return f"it is not UTF-8 text (invalid byte at {e.start})"
  return ""


def read_text_corpus(source: str, split: str, *, path: str = "", val_fraction: float = 0.02,
                     suffixes: tuple[str, ...] = (".py",), max_bytes: int = 0,
                     tokenizer: Tokenizer | None = None, allow_binary: bool = False
                     ) -> np.ndarray:
  """Token stream [N] int32 of one split of a text source ('stdlib' or 'files').

  `path` (source 'files') is a file or directory, local or a cloud URL. Binary files are
  refused (a single file) or skipped with a warning (in a directory) unless `allow_binary`.
  Errors name the path, the split and the fix.
  """
  validation.one_of("split", split, ("train", "validation"))
  validation.one_of("source", source, ("stdlib", "files"))
  validation.in_range("val_fraction", val_fraction, 0.0, 1.0, low_open=True, high_open=True)
  tokenizer = tokenizer or ByteTokenizer()
  if source == "files":
    if not path:
      raise ValueError("data.source='files' needs data.path (a text file or directory)")
    root = paths.path(path)
    if not root.exists():
      raise ValueError(f"data.path={path!r} does not exist; expected a text file or directory")
  else:
    root = paths.path(stdlib_root())
  if not root.is_dir():
    data = root.read_bytes()
    why = binary_reason(data)
    if why and not allow_binary:
      raise ValueError(f"data.path={path!r} does not look like text: {why}. tnx trains "
                       "byte-level LMs on text; pass --config.data.allow_binary=true to train "
                       "on it anyway")
    cut = int(len(data) * (1 - val_fraction))
    docs, skipped = [data[:cut] if split == "train" else data[cut:]], []
  else:
    files = list_files(root, suffixes)
    if not files:
      raise ValueError(f"data.path={str(root)!r} holds no files ending in {list(suffixes)} "
                       "(data.suffixes); set data.suffixes or point data.path at a file")
    fractions = {f: stable_fraction(str(f.relative_to(root))) for f in files}
    chosen = [f for f in files if (fractions[f] < val_fraction) == (split == "validation")]
    if not chosen:
      need = min(fractions.values()) if split == "validation" else max(fractions.values())
      fix = (f"raise data.val_fraction above {need:.3f}" if split == "validation" else
             f"lower data.val_fraction below {need:.3f}")
      raise ValueError(
          f"data.path={str(root)!r}: none of its {len(files)} files falls into the {split} "
          f"split (data.val_fraction={val_fraction} holds out whole files, chosen by a hash "
          f"of their path); add files, {fix}, or point data.path at a single file (split by "
          "bytes)")
    docs, skipped = [], []
    for f in chosen:
      data = f.read_bytes()
      if not allow_binary and binary_reason(data):
        skipped.append(str(f.relative_to(root)))
      else:
        docs.append(data)
    if skipped and source == "files":  # the stdlib's non-UTF-8 test files: skipped quietly
      warnings.warn(f"data.path={str(root)!r}, {split} split: skipped {len(skipped)} binary "
                    f"file(s) ({', '.join(skipped[:3])}{', ...' if len(skipped) > 3 else ''}); "
                    "pass --config.data.allow_binary=true to include them", stacklevel=2)
  if not any(docs):
    raise ValueError(_empty_split_message(source, str(root), split, root.is_dir(), skipped,
                                          len(docs), val_fraction))
  parts, total = [], 0
  for d in docs:
    ids = tokenizer.encode(d)
    parts.extend([ids, np.array([SEPARATOR], np.int32)])
    total += len(ids) + 1
    if max_bytes and total >= max_bytes:
      break
  stream = np.concatenate(parts).astype(np.int32)
  return stream[:max_bytes] if max_bytes else stream


def _empty_split_message(source: str, where: str, split: str, is_dir: bool,
                         skipped: list[str], n_files: int, val_fraction: float) -> str:
  """Why the `split` of a text source holds no bytes, naming the path, the split and the fix."""
  head = f"data.path={where!r}" if source == "files" else f"the {source} corpus ({where})"
  if skipped and n_files == 0:
    return (f"{head}: every file of the {split} split ({len(skipped)}: "
            f"{', '.join(skipped[:3])}{', ...' if len(skipped) > 3 else ''}) looks binary and "
            "was skipped; add text files or pass --config.data.allow_binary=true")
  if not is_dir:
    part = (f"its last {100 * val_fraction:g}% of bytes" if split == "validation" else
            f"its first {100 * (1 - val_fraction):g}% of bytes")
    return (f"{head}: the {split} split ({part}) is empty; use a longer file"
            + (" or a larger data.val_fraction" if split == "validation" else
               " or a smaller data.val_fraction"))
  return (f"{head}: the {n_files} file(s) of the {split} split are empty; add text to them, "
          "or change data.val_fraction (which whole files are held out) or data.suffixes")


class PackedWindows:
  """Random-access source: window i = stream[i L : (i + 1) L + 1] as inputs/targets/weights."""

  def __init__(self, stream: np.ndarray, seq_len: int):
    self.stream, self.seq_len = stream, validation.positive_int("seq_len", seq_len)
    if len(stream) < seq_len + 1:
      raise ValueError(f"token stream of {len(stream)} tokens is shorter than seq_len + 1 = "
                       f"{seq_len + 1}")

  def __len__(self) -> int:
    return (len(self.stream) - 1) // self.seq_len

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    w = self.stream[i * self.seq_len: (i + 1) * self.seq_len + 1]
    return {"inputs": w[:-1], "targets": w[1:], "weights": np.ones(self.seq_len, np.float32)}


class MQAR:
  """Multi-query associative recall. Each sequence starts with `n_pairs` (key, value) pairs
  (keys distinct, from [2, V/2); values from [V/2, V)); afterwards `n_queries` of those keys
  appear at random non-overlapping positions, each followed by its value; the rest is filler
  token 1. The loss/accuracy weight is 1 exactly at positions whose target is a recalled value.
  """

  def __init__(self, seq_len: int, n_pairs: int, n_queries: int, vocab_size: int, seed: int):
    self.seq_len, self.n_pairs, self.n_queries = seq_len, n_pairs, n_queries
    self.vocab_size, self.seed = vocab_size, seed
    if n_pairs > vocab_size // 2 - 2:
      raise ValueError(f"n_pairs={n_pairs} needs vocab_size >= {2 * n_pairs + 4}")
    if 2 * n_pairs + 2 * n_queries > seq_len + 1:
      raise ValueError(f"2*n_pairs + 2*n_queries = {2 * n_pairs + 2 * n_queries} does not fit "
                       f"seq_len + 1 = {seq_len + 1}")

  def __len__(self) -> int:
    return 1 << 30

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng((self.seed, int(i)))
    half = self.vocab_size // 2
    keys = rng.choice(np.arange(2, half), self.n_pairs, replace=False)
    values = rng.integers(half, self.vocab_size, self.n_pairs)
    seq = np.ones(self.seq_len + 1, np.int32)
    seq[0:2 * self.n_pairs:2], seq[1:2 * self.n_pairs:2] = keys, values
    slots = (self.seq_len + 1 - 2 * self.n_pairs) // 2
    pos = 2 * self.n_pairs + 2 * np.sort(rng.choice(slots, self.n_queries, replace=False))
    which = rng.integers(0, self.n_pairs, self.n_queries)
    seq[pos], seq[pos + 1] = keys[which], values[which]
    weights = np.zeros(self.seq_len, np.float32)
    weights[pos] = 1.0  # input = key at pos, target = value at pos + 1
    return {"inputs": seq[:-1], "targets": seq[1:], "weights": weights}


class Needle:
  """Single needle in a haystack: random haystack tokens from [3, V/2); the needle
  (marker 1, key, value) sits at a random depth; the sequence ends with (marker 1, key) and the
  target at the last position is the value (key from [V/2, 3V/4), value from [3V/4, V)).
  Weight 1 only at the last position.
  """

  def __init__(self, seq_len: int, vocab_size: int, seed: int):
    if seq_len < 8 or vocab_size < 16:
      raise ValueError(f"needle needs seq_len >= 8 and vocab_size >= 16, got {seq_len}, "
                       f"{vocab_size}")
    self.seq_len, self.vocab_size, self.seed = seq_len, vocab_size, seed

  def __len__(self) -> int:
    return 1 << 30

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng((self.seed, int(i)))
    v = self.vocab_size
    seq = rng.integers(3, v // 2, self.seq_len + 1).astype(np.int32)
    key, value = rng.integers(v // 2, 3 * v // 4), rng.integers(3 * v // 4, v)
    depth = rng.integers(0, self.seq_len - 5)
    seq[depth:depth + 3] = (1, key, value)
    seq[-3:] = (1, key, value)
    weights = np.zeros(self.seq_len, np.float32)
    weights[-1] = 1.0
    return {"inputs": seq[:-1], "targets": seq[1:], "weights": weights}


def make_source(data: Any, seq_len: int, vocab_size: int, split: str) -> Any:
  """The random-access source of one split described by the `data` config block."""
  validation.one_of("data.source", data.source, SOURCES)
  source = "files" if data.path and data.source == "stdlib" else data.source  # path => files
  if source in ("stdlib", "files"):
    stream = read_text_corpus(source, split, path=data.path,
                              val_fraction=data.val_fraction,
                              suffixes=tuple(config_list(data.suffixes)),
                              max_bytes=data.max_bytes,
                              allow_binary=bool(data.get("allow_binary", False)))
    if len(stream) < seq_len + 1:
      where = f"data.path={data.path!r}" if source == "files" else "the stdlib corpus"
      single = source == "files" and not paths.path(data.path).is_dir()
      held_out = "its last bytes" if single else "whole files, chosen by a hash of their path"
      fix = (f"a larger data.val_fraction (the validation split is {held_out}), "
             if split == "validation" else "")
      raise ValueError(
          f"{where}: the {split} split has {len(stream)} tokens, fewer than data.seq_len + 1 "
          f"= {seq_len + 1} needed for one window; use more text, {fix}or a smaller "
          "data.seq_len" + (" (or a larger data.max_bytes)" if data.max_bytes else ""))
    return PackedWindows(stream, seq_len)
  seed = data.seed + (0 if split == "train" else 1_000_003)
  if data.source == "mqar":
    return MQAR(seq_len, data.mqar_pairs, data.mqar_queries, vocab_size, seed)
  return Needle(seq_len, vocab_size, seed)


def config_list(value: Any) -> list[str]:
  """A comma-separated string or a sequence, as a list of non-empty strings."""
  items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
  return [t.strip() for t in items if t.strip()]


def batches(source: Any, local_batch: int, *, seed: int, shuffle: bool = True,
            repeat: bool = True) -> grain.IterDataset:
  """grain pipeline: per-process slice -> (shuffle) -> (repeat) -> batch -> IterDataset.

  The iterator's `get_state()`/`set_state()` is its position; it is checkpointed for resume.
  """
  validation.positive_int("local_batch", local_batch)
  ds = grain.MapDataset.source(source)[jax.process_index()::jax.process_count()]
  if shuffle:
    ds = ds.shuffle(seed=seed)
  if repeat:
    ds = ds.repeat(None)
  return ds.batch(local_batch, drop_remainder=True).to_iter_dataset()


def eval_batches(source: Any, local_batch: int, num_batches: int) -> list[dict[str, np.ndarray]]:
  """The first `num_batches` batches of a split (fixed, unshuffled, for comparable evals)."""
  it = iter(batches(source, local_batch, seed=0, shuffle=False, repeat=True))
  return [next(it) for _ in range(num_batches)]
