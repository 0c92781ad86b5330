"""ShapesVQA: a generated, seeded visual question answering pool with built-in redundancy.

An image is a 4 x 4 grid; each cell holds nothing (probability 1 - density) or a shape in
{square, circle, triangle} with a colour in {red, green, blue, yellow}. A cell's patch feature
is one-hot(shape incl. 'none', 4) + one-hot(colour, 4; zeros when empty) + a position code,
plus Gaussian noise: (row, col) / 3 (2 numbers, `position_code='linear'`) or one-hot row +
one-hot column (8 numbers, 'onehot'); a frozen random linear "vision tower" (seeded, shared
by every model, the analogue of a frozen CLIP encoder) maps the 16 patches to `image_dim`
features.

Five task families (question -> one answer token, loss on the answer only):
  0 exists:  `exists <shape>` -> yes/no                (easy, over-represented, redundant)
  1 colour:  `colour at <r> <c>` -> colour of that (non-empty) cell   (spatial grounding)
  2 count:   `count <colour>` -> digit                                (hard)
  3 shape:   `shape of the <colour> one` -> shape (that colour occurs exactly once)
  4 add:     `add <a> <b>` -> digit a + b, with no image  (text-only, like ShareGPT in LLaVA)
The pool mixes them 50/20/10/15/5 % and then duplicates a fraction of the `exists` items 3-5
times (same image) with token-level paraphrases (synonym tokens), so a random subset
over-samples an easy, redundant skill. Test sets are balanced over families.

Sequence layout (right-padded with PAD to `seq_len`):
  [BOS, SYS1, SYS2, IMG x 16, SEP, question..., ANS, answer, EOS]   (text-only: no IMG block)
`text_mask` marks the tokens after the image block and its separator (question, ANS, answer,
EOS); `image_mask` marks the IMG positions.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tnx import validation

SPECIALS = ("PAD", "BOS", "SYS1", "SYS2", "IMG", "SEP", "ANS", "EOS")
WORDS = ("exists", "is-there", "any", "colour", "hue", "at", "count", "how-many", "shape",
         "form", "of", "the", "one", "add", "plus", "describe")
SHAPES = ("square", "circle", "triangle")
SHAPE_SYNONYMS = ("box", "ring", "wedge")
COLOURS = ("red", "green", "blue", "yellow")
DIGITS = tuple(str(d) for d in range(10))
VOCAB = SPECIALS + WORDS + SHAPES + SHAPE_SYNONYMS + COLOURS + DIGITS + ("yes", "no")
TOKEN = {w: i for i, w in enumerate(VOCAB)}
PAD, BOS, IMG, SEP, ANS, EOS = (TOKEN[w] for w in ("PAD", "BOS", "IMG", "SEP", "ANS", "EOS"))

FAMILIES = ("exists", "colour", "count", "shape", "add")
CAPTION = len(FAMILIES)   # family id of the stage-1 caption items (not an instruction task)
POOL_MIX = (0.50, 0.20, 0.10, 0.15, 0.05)
GRID = 4
N_IMAGE_TOKENS = GRID * GRID
# Synonym choices of the paraphrased duplicates, per canonical word.
PARAPHRASE = {"exists": ("exists", "is-there", "any"), "square": ("square", "box"),
              "circle": ("circle", "ring"), "triangle": ("triangle", "wedge")}


@dataclasses.dataclass(frozen=True)
class ShapesVQAConfig:
  """Attributes:
    density: probability that a cell holds a shape.
    noise: std of the Gaussian noise on the patch features.
    position_code: 'linear' ((row, col) / 3) or 'onehot' (one-hot row and column).
    image_dim: output width of the frozen vision tower.
    seq_len: padded sequence length L (>= 28).
    mix: pool share of each family (sums to 1).
    dup_fraction: share of the `exists` items that get paraphrased duplicates.
    dup_copies: (min, max) total copies of a duplicated item, original included.
    tower_seed: seed of the frozen vision tower (shared by the pool, the test set, every model).
  """
  density: float = 0.4
  noise: float = 0.1
  position_code: str = "linear"
  image_dim: int = 32
  seq_len: int = 32
  mix: tuple[float, ...] = POOL_MIX
  dup_fraction: float = 0.2
  dup_copies: tuple[int, int] = (3, 5)
  tower_seed: int = 1234

  def __post_init__(self):
    validation.in_range("density", self.density, 0.0, 1.0, low_open=True, high_open=True)
    validation.non_negative("noise", self.noise)
    validation.one_of("position_code", self.position_code, ("linear", "onehot"))
    validation.positive_int("image_dim", self.image_dim)
    if self.seq_len < 28:
      raise ValueError(f"seq_len must be >= 28 (longest ShapesVQA item), got {self.seq_len}")
    if len(self.mix) != len(FAMILIES) or abs(sum(self.mix) - 1) > 1e-9 or min(self.mix) < 0:
      raise ValueError(f"mix must be {len(FAMILIES)} non-negative shares summing to 1, got "
                       f"{self.mix}")
    validation.in_range("dup_fraction", self.dup_fraction, 0.0, 1.0)
    lo, hi = self.dup_copies
    if not 1 <= lo <= hi:
      raise ValueError(f"dup_copies must be (min, max) with 1 <= min <= max, got "
                       f"{self.dup_copies}")


  @property
  def patch_dim(self) -> int:
    return 8 + (2 if self.position_code == "linear" else 2 * GRID)


def vision_tower(cfg: ShapesVQAConfig) -> np.ndarray:
  """The frozen random linear vision tower [patch_dim, image_dim] (fan-in scaled)."""
  rng = np.random.default_rng(cfg.tower_seed)
  return rng.normal(size=(cfg.patch_dim, cfg.image_dim)) / np.sqrt(cfg.patch_dim)


def _grid(rng: np.random.Generator, density: float) -> tuple[np.ndarray, np.ndarray]:
  """shape [16] in {-1 (none), 0..2}, colour [16] in {-1, 0..3}."""
  full = rng.random(N_IMAGE_TOKENS) < density
  shape = np.where(full, rng.integers(0, len(SHAPES), N_IMAGE_TOKENS), -1)
  colour = np.where(full, rng.integers(0, len(COLOURS), N_IMAGE_TOKENS), -1)
  return shape, colour


def _patches(rng: np.random.Generator, shape: np.ndarray, colour: np.ndarray,
             cfg: ShapesVQAConfig) -> np.ndarray:
  """[16, patch_dim] patch features of one grid."""
  f = np.zeros((N_IMAGE_TOKENS, cfg.patch_dim))
  cells = np.arange(N_IMAGE_TOKENS)
  f[cells, shape + 1] = 1.0
  has = colour >= 0
  f[np.flatnonzero(has), 4 + colour[has]] = 1.0
  if cfg.position_code == "linear":
    f[:, 8], f[:, 9] = (cells // GRID) / (GRID - 1), (cells % GRID) / (GRID - 1)
  else:
    f[cells, 8 + cells // GRID] = 1.0
    f[cells, 8 + GRID + cells % GRID] = 1.0
  return f + cfg.noise * rng.normal(size=f.shape)


def _question(rng: np.random.Generator, family: int, shape: np.ndarray, colour: np.ndarray
              ) -> tuple[list[str], list[str]] | None:
  """(question words, answer words) for `family` on this grid; None if the grid cannot pose
  it."""
  qa = _task(rng, family, shape, colour)
  return None if qa is None else (qa[0], [qa[1]] if isinstance(qa[1], str) else qa[1])


def _task(rng, family, shape, colour):
  if family == CAPTION:   # `describe <r> <c>` -> colour shape ('no no' for an empty cell)
    cell = int(rng.integers(N_IMAGE_TOKENS))
    full = shape[cell] >= 0
    return (["describe", DIGITS[cell // GRID], DIGITS[cell % GRID]],
            [COLOURS[colour[cell]] if full else "no", SHAPES[shape[cell]] if full else "no"])
  if family == 0:
    s = int(rng.integers(len(SHAPES)))
    return ["exists", SHAPES[s]], "yes" if np.any(shape == s) else "no"
  if family == 1:
    full = np.flatnonzero(shape >= 0)
    if not len(full):
      return None
    cell = int(rng.choice(full))
    return ["colour", "at", DIGITS[cell // GRID], DIGITS[cell % GRID]], COLOURS[colour[cell]]
  if family == 2:
    c = int(rng.integers(len(COLOURS)))
    return ["count", COLOURS[c]], DIGITS[int(np.sum(colour == c))]
  if family == 3:
    unique = [c for c in range(len(COLOURS)) if np.sum(colour == c) == 1]
    if not unique:
      return None
    c = int(rng.choice(unique))
    return ["shape", "of", "the", COLOURS[c], "one"], SHAPES[int(shape[colour == c][0])]
  a = int(rng.integers(10))
  b = int(rng.integers(10 - a))
  return ["add", DIGITS[a], DIGITS[b]], DIGITS[a + b]


def _paraphrase(rng: np.random.Generator, words: list[str]) -> list[str]:
  return [str(rng.choice(PARAPHRASE[w])) if w in PARAPHRASE else w for w in words]


def _encode(words: list[str], answer: list[str], has_image: bool, seq_len: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """tokens [L], targets [L], weights [L] (1 where the next token is an answer token),
  text_mask [L], image_mask [L]."""
  head = ["BOS", "SYS1", "SYS2"] + ["IMG"] * (N_IMAGE_TOKENS if has_image else 0) + ["SEP"]
  seq = head + words + ["ANS"] + answer + ["EOS"]
  ids = np.full(seq_len, PAD, np.int32)
  ids[: len(seq)] = [TOKEN[w] for w in seq]
  targets = np.concatenate([ids[1:], [PAD]]).astype(np.int32)
  weights = np.zeros(seq_len, np.float32)
  ans = len(head) + len(words)                     # ANS predicts the first answer token
  weights[ans: ans + len(answer)] = 1.0
  text = np.zeros(seq_len, bool)
  text[len(head): len(seq)] = True
  return ids, targets, weights, text, ids == IMG


def generate(seed: int, n: int, cfg: ShapesVQAConfig = ShapesVQAConfig(), *,
             mix: tuple[float, ...] | None = None, duplicates: bool = True
             ) -> dict[str, np.ndarray]:
  """`n` base items drawn with family shares `mix` (default cfg.mix), then (if `duplicates`)
  paraphrased copies of a `dup_fraction` share of the exists items; shuffled.

  Returns numpy arrays with leading dimension N (= n + number of copies): tokens, targets,
  weights [N, L]; text_mask, image_mask, token_mask (not padding) [N, L] bool; image
  [N, 16, image_dim] float32 (zeros for text-only items); family [N] int; has_image [N] bool;
  source [N] (the first member, after shuffling, of an item's group of copies; itself for
  items without copies).
  """
  n = validation.positive_int("n", n)
  rng = np.random.default_rng(seed)
  mix = cfg.mix if mix is None else mix
  counts = np.floor(np.asarray(mix) * n).astype(int)
  counts[int(np.argmax(mix))] += n - counts.sum()
  families = rng.permutation(np.repeat(np.arange(len(FAMILIES)), counts))
  return _assemble(rng, families, cfg, duplicates)


def captions(seed: int, n: int, cfg: ShapesVQAConfig = ShapesVQAConfig()
             ) -> dict[str, np.ndarray]:
  """`n` stage-1 alignment items `describe <r> <c>` -> `<colour> <shape>` (`no no` for an
  empty cell), family CAPTION; the analogue of LLaVA's caption data for projector
  pre-training."""
  n = validation.positive_int("n", n)
  rng = np.random.default_rng(seed)
  return _assemble(rng, np.full(n, CAPTION), cfg, False)


def _assemble(rng: np.random.Generator, families: np.ndarray, cfg: ShapesVQAConfig,
              duplicates: bool) -> dict[str, np.ndarray]:
  tower = vision_tower(cfg)
  rows, base_of = [], []
  for i, fam in enumerate(families):
    while True:
      shape, colour = _grid(rng, cfg.density)
      qa = _question(rng, int(fam), shape, colour)
      if qa is not None:
        break
    has_image = fam != 4
    image = (_patches(rng, shape, colour, cfg) @ tower) if has_image else \
        np.zeros((N_IMAGE_TOKENS, cfg.image_dim))
    rows.append((qa[0], qa[1], has_image, image, int(fam)))
    base_of.append(i)
    if duplicates and fam == 0 and rng.random() < cfg.dup_fraction:
      for _ in range(int(rng.integers(cfg.dup_copies[0], cfg.dup_copies[1] + 1)) - 1):
        rows.append((_paraphrase(rng, qa[0]), qa[1], True, image, 0))
        base_of.append(i)
  order = rng.permutation(len(rows))
  enc = [_encode(rows[j][0], rows[j][1], rows[j][2], cfg.seq_len) for j in order]
  base = np.asarray(base_of)[order]
  first = {}
  for pos, b in enumerate(base):      # a duplicate group's source: its first shuffled member
    first.setdefault(int(b), pos)
  return {
      "tokens": np.stack([e[0] for e in enc]), "targets": np.stack([e[1] for e in enc]),
      "weights": np.stack([e[2] for e in enc]), "text_mask": np.stack([e[3] for e in enc]),
      "image_mask": np.stack([e[4] for e in enc]),
      "token_mask": np.stack([e[0] for e in enc]) != PAD,
      "image": np.stack([rows[j][3] for j in order]).astype(np.float32),
      "family": np.asarray([rows[j][4] for j in order]),
      "has_image": np.asarray([rows[j][2] for j in order]),
      "source": np.asarray([first[int(b)] for b in base]),
  }


def test_set(seed: int, per_family: int, cfg: ShapesVQAConfig = ShapesVQAConfig()
             ) -> dict[str, np.ndarray]:
  """`per_family` fresh items of every family, no duplicates (balanced, so a mean over
  families weighs every skill equally)."""
  per_family = validation.positive_int("per_family", per_family)
  k = len(FAMILIES)
  return generate(seed, per_family * k, cfg, mix=(1.0 / k,) * k, duplicates=False)


def subset(pool: dict[str, np.ndarray], indices: np.ndarray) -> dict[str, np.ndarray]:
  """Rows `indices` of every array of `pool`."""
  idx = np.asarray(indices)
  return {k: v[idx] for k, v in pool.items()}
