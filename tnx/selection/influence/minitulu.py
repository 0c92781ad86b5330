"""A generated multi-task instruction pool for end-to-end selection with a byte-level LM.

Every example is a (prompt, response) string pair encoded as bytes, packed into a fixed length
L with next-token targets and a loss weight of 1 exactly on the response bytes (and the
end-of-response newline). Source tasks (equal shares of the pool):

  add, sub, mul   2-3 digit addition and subtraction, 1-digit multiplication
  two_step        a+b-c (a small share: the arithmetic target's own format)
  copy, reverse, sort   string manipulation of letters / digits
  kv              key-value lookup from an in-prompt context (span extraction)
  fact, fact_mc   synthetic facts ("zib:" -> "red") and multiple-choice questions about them
  junk            random strings mapped to random strings (noise)
  dup             a few fixed examples repeated (redundant data)

Targets (separate runs; a small target set plus a held-out set from the same generator):
  arith2 (GSM8k-like: a+b-c), kv (SQuAD-like span extraction), fact_mc (MMLU-like multiple
  choice over the synthetic facts). The facts (entity -> colour) are fixed by the pool seed and
  shared by the pool and the targets.

Dimension letters: N examples, L sequence length.
"""

from __future__ import annotations

import string
from collections.abc import Callable

import numpy as np

from tnx import validation

COLOURS = ("red", "blue", "green", "gray")
SOURCE_TASKS = ("add", "sub", "mul", "two_step", "copy", "reverse", "sort", "kv", "fact",
                "fact_mc", "junk", "dup")
TARGET_TASKS = ("arith2", "kv", "fact_mc")
END = "\n"


class Facts:
  """`num` entities with 3-letter names, each with a colour (fixed by the seed)."""

  def __init__(self, num: int, seed: int):
    rng = np.random.default_rng((seed, 7))
    names: set[str] = set()
    while len(names) < num:
      names.add("".join(rng.choice(list(string.ascii_lowercase), 3)))
    self.names = sorted(names)
    self.colour = {n: COLOURS[int(rng.integers(len(COLOURS)))] for n in self.names}


def _letters(rng, lo, hi, alphabet=string.ascii_lowercase):
  return "".join(rng.choice(list(alphabet), int(rng.integers(lo, hi + 1))))


def _kv(rng, pairs):
  keys = rng.choice(list(string.ascii_lowercase), pairs, replace=False)
  vals = rng.integers(0, 10, pairs)
  q = int(rng.integers(pairs))
  ctx = ",".join(f"{k}={v}" for k, v in zip(keys, vals))
  return f"{ctx};{keys[q]}?", str(vals[q])


def _fact_mc(rng, facts):
  name = facts.names[int(rng.integers(len(facts.names)))]
  order = rng.permutation(len(COLOURS))
  opts = " ".join(f"{'abcd'[i]}){COLOURS[j]}" for i, j in enumerate(order))
  answer = "abcd"[int(np.flatnonzero(np.asarray(COLOURS)[order] == facts.colour[name])[0])]
  return f"{name}? {opts}:", answer


def generators(facts: Facts, dup_bank: list[tuple[str, str]]
               ) -> dict[str, Callable[[np.random.Generator], tuple[str, str]]]:
  """task name -> rng -> (prompt, response)."""
  def add(r):
    a, b = r.integers(10, 1000, 2)
    return f"{a}+{b}=", str(a + b)

  def sub(r):
    a, b = sorted(r.integers(10, 1000, 2))[::-1]
    return f"{a}-{b}=", str(a - b)

  def mul(r):
    a, b = r.integers(1, 10, 2)
    return f"{a}*{b}=", str(a * b)

  def two_step(r):
    a, b = r.integers(10, 100, 2)
    c = r.integers(1, a + b)
    return f"{a}+{b}-{c}=", str(a + b - c)

  def copy(r):
    s = _letters(r, 3, 8)
    return f"copy {s}:", s

  def reverse(r):
    s = _letters(r, 3, 8)
    return f"rev {s}:", s[::-1]

  def sort(r):
    s = _letters(r, 4, 8, string.digits)
    return f"sort {s}:", "".join(sorted(s))

  def fact(r):
    name = facts.names[int(r.integers(len(facts.names)))]
    return f"{name}:", facts.colour[name]

  def junk(r):
    return _letters(r, 4, 12, string.ascii_letters + string.punctuation), _letters(r, 2, 8)

  def dup(r):
    return dup_bank[int(r.integers(len(dup_bank)))]

  return {"add": add, "sub": sub, "mul": mul, "two_step": two_step, "copy": copy,
          "reverse": reverse, "sort": sort, "kv": lambda r: _kv(r, int(r.integers(2, 5))),
          "fact": fact, "fact_mc": lambda r: _fact_mc(r, facts), "junk": junk, "dup": dup,
          "arith2": two_step}


def encode(pairs: list[tuple[str, str]], seq_len: int) -> dict[str, np.ndarray]:
  """{'inputs', 'targets' [N, L] int32, 'weights' [N, L] float32}: the bytes of
  prompt + response + END, shifted by one; weight 1 where the target is a response byte."""
  n = len(pairs)
  inputs = np.zeros((n, seq_len), np.int32)
  targets = np.zeros((n, seq_len), np.int32)
  weights = np.zeros((n, seq_len), np.float32)
  for i, (prompt, response) in enumerate(pairs):
    seq = np.frombuffer((prompt + response + END).encode(), np.uint8).astype(np.int32)
    if len(seq) > seq_len + 1:
      raise ValueError(f"example {prompt + response!r} needs {len(seq) - 1} positions; "
                       f"seq_len={seq_len} is too short")
    m = len(seq) - 1
    inputs[i, :m], targets[i, :m] = seq[:-1], seq[1:]
    weights[i, len(prompt) - 1:m] = 1.0  # targets from the first response byte to END
  return {"inputs": inputs, "targets": targets, "weights": weights}


def make_pool(size: int, *, seed: int, seq_len: int = 40, two_step_share: float = 0.25,
              num_facts: int = 40, dup_examples: int = 8) -> dict[str, np.ndarray]:
  """The source pool: `size` examples, equal shares per source task except two_step (given
  `two_step_share` of a normal share), shuffled. Adds 'task' [N] (index into SOURCE_TASKS)."""
  validation.positive_int("size", size)
  validation.in_range("two_step_share", two_step_share, 0, 1)
  rng = np.random.default_rng((seed, 1))
  facts = Facts(num_facts, seed)
  gens = generators(facts, [])
  bank = [gens[t](rng) for t in ("add", "copy", "kv", "fact_mc") for _ in range(
      max(1, dup_examples // 4))]
  gens = generators(facts, bank)
  shares = np.array([two_step_share if t == "two_step" else 1.0 for t in SOURCE_TASKS])
  counts = np.floor(shares / shares.sum() * size).astype(int)
  counts[0] += size - counts.sum()
  pairs, task = [], []
  for t, c in zip(SOURCE_TASKS, counts):
    pairs += [gens[t](rng) for _ in range(c)]
    task += [SOURCE_TASKS.index(t)] * c
  order = rng.permutation(size)
  out = encode([pairs[i] for i in order], seq_len)
  out["task"] = np.asarray(task, np.int32)[order]
  return out


def make_target(task: str, size: int, *, seed: int, pool_seed: int, seq_len: int = 40,
                num_facts: int = 40) -> dict[str, np.ndarray]:
  """`size` examples of a target task (facts shared with the pool of `pool_seed`)."""
  validation.one_of("target", task, TARGET_TASKS)
  validation.positive_int("size", size)
  rng = np.random.default_rng((seed, 2, TARGET_TASKS.index(task)))
  gens = generators(Facts(num_facts, pool_seed), [])
  if task == "kv":
    return encode([_kv(rng, 4) for _ in range(size)], seq_len)
  return encode([gens[task](rng) for _ in range(size)], seq_len)
