"""Multi-domain LM data for tnx.train: K named domains mixed with grain, per-domain loss weights,
per-domain validation metrics, and online ERMA / VA updates (arXiv 2511.06913).

Domains (`cfg.domains`):
  names          comma list of K names. Built-in corpus: groups of the Python standard library
                 (STDLIB_GROUPS: 'tests', 'net', 'text', and 'core' = every other module);
  paths          comma list of K directories (or files) of user text, one per domain
                 (empty = the built-in groups); each split into train/validation by
                 data.val_fraction, as data.source='files';
  pi             domain importances (comma list, default uniform): what the loss is about;
  loss_weights   initial loss weights w0 (default 1; normalised to sum pi w = 1);
  sampling       'pi' (sampling weights p = pi), 'fixed' (p = sampling_weights) or 'va';
  loss_rule      'none' or 'erma' (FGLS is specific to linear regression, see tnx.mixing);
  corrupt        names of domains whose bytes are shuffled within every line (a corrupted,
                 low-quality domain for demonstrations), in both splits.

Each training batch comes from grain's `IterDataset.mix` of the per-domain pipelines with
the sampling weights p. Every example carries its domain id. The host turns the batch into the
stratified objective sum_i pi_i w_i mean_{j in domain i} l_j by rescaling each sequence's token
weights with pi_d w_d / (b_d n_j): b_d is domain d's count in the batch and n_j the sequence's
token count. tnx.train's step (loss = sum(w nll) / max(sum w, 1)) then computes exactly that
objective, unchanged.

Every `update_every` steps, `update()` measures statistics at the current parameters:
  - the mean and variance of the per-sequence loss on each domain's fixed validation batches,
    for ERMA;
  - the trace of the per-sequence gradient covariance from `probe_size` training sequences per
    domain, for VA. The probe is drawn from (seed, round), so it needs no iterator state.
It then updates w (ERMA) and p (VA: p ~ pi w v, rounded to the batch) with tnx.mixing's rules
and rebuilds the mixture with the new weights. grain's mapping-keyed mix restores each
component's position by name, so no example is repeated or skipped.

Exact resume: the iterator's state holds the sampling weights and the mixture position (saved
by the checkpointer's grain item); `state_dict()` (loss weights, running estimates, round) goes
into the checkpoint's metadata.
"""

from __future__ import annotations

import json
import math
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from tnx import validation
from tnx.mixing import sampling as S
from tnx.mixing import weights as W
from tnx.train import data as data_lib
from tnx.train import paths

# Built-in domains: first path component (package directory or module file) under the stdlib.
STDLIB_GROUPS = {
    "tests": ("test", "unittest", "doctest.py"),
    "net": ("asyncio", "email", "http", "urllib", "xmlrpc", "wsgiref", "concurrent",
            "multiprocessing", "socket.py", "socketserver.py", "ssl.py", "smtplib.py",
            "ftplib.py", "imaplib.py", "poplib.py", "selectors.py", "ipaddress.py",
            "mailbox.py", "nntplib.py", "telnetlib.py", "smtpd.py", "mimetypes.py"),
    "text": ("re", "json", "html", "xml", "string.py", "textwrap.py", "difflib.py", "csv.py",
             "codecs.py", "gettext.py", "locale.py", "shlex.py", "tokenize.py", "sre_compile.py",
             "sre_parse.py", "sre_constants.py", "stringprep.py", "quopri.py", "base64.py",
             "fnmatch.py", "glob.py", "pprint.py", "reprlib.py"),
}
OTHER = "core"
SAMPLING = ("pi", "fixed", "va")
LOSS_RULES = ("none", "erma")


def default_config() -> mlc.ConfigDict:
  """The `domains` block of a training config (names empty = single-domain data)."""
  c = mlc.ConfigDict()
  c.names = ""                    # comma list of K domain names ('' = off)
  c.paths = ""                    # comma list of K directories/files ('' = stdlib groups)
  c.pi = ""                       # importances (default uniform)
  c.loss_weights = ""             # initial loss weights w0 (default 1)
  c.sampling = "pi"               # pi | fixed | va
  c.sampling_weights = ""         # p for sampling='fixed'
  c.loss_rule = "none"            # none | erma
  c.update_every = 25             # steps between weight updates
  c.ema = 0.3                     # VA running-variance factor
  c.erma_gamma1 = 0.1
  c.erma_gamma2 = 1.0
  c.erma_g = "constant"           # constant | inv_sqrt
  c.probe_size = 4                # VA: training sequences per domain per update
  c.val_batches = 2               # per-domain validation batches (ERMA statistics, eval)
  c.corrupt = ""                  # names of domains shuffled within lines
  return c


def enabled(cfg: mlc.ConfigDict) -> bool:
  return "domains" in cfg and bool(data_lib.config_list(cfg.domains.names))


def _floats(name: str, text: str, k: int, default: float) -> np.ndarray:
  items = data_lib.config_list(text)
  if not items:
    return np.full(k, default)
  try:
    return np.asarray([float(t) for t in items])
  except ValueError:
    raise ValueError(f"{name} must be a comma list of numbers, got {text!r}") from None


def stdlib_group_files(name: str, suffixes: tuple[str, ...]) -> list[Any]:
  """The stdlib files of built-in group `name` (sorted)."""
  root = paths.path(data_lib.stdlib_root())
  validation.one_of("domains.names entry", name, (*STDLIB_GROUPS, OTHER))
  claimed = {p for group in STDLIB_GROUPS.values() for p in group}
  out = []
  for f in data_lib.list_files(root, suffixes):
    top = f.relative_to(root).parts[0]
    if (name == OTHER and top not in claimed) or top in STDLIB_GROUPS.get(name, ()):
      out.append(f)
  return out


def read_files(files: list[Any], root: Any, split: str, val_fraction: float, max_bytes: int
               ) -> np.ndarray:
  """Token stream of one split of `files` (split by a stable hash of the path under `root`,
  binary files skipped, documents separated by data.SEPARATOR)."""
  tok = data_lib.ByteTokenizer()
  parts, total = [], 0
  for f in files:
    if (data_lib.stable_fraction(str(f.relative_to(root))) < val_fraction) != \
        (split == "validation"):
      continue
    raw = f.read_bytes()
    if data_lib.binary_reason(raw):
      continue
    parts += [tok.encode(raw), np.array([data_lib.SEPARATOR], np.int32)]
    total += len(raw) + 1
    if max_bytes and total >= max_bytes:
      break
  if not parts:
    raise ValueError(f"no text in the {split} split of {len(files)} files under {root}")
  stream = np.concatenate(parts).astype(np.int32)
  return stream[:max_bytes] if max_bytes else stream


def shuffle_within_lines(stream: np.ndarray, seed: int) -> np.ndarray:
  """The same bytes with each line's bytes (newline excluded) permuted at random."""
  rng = np.random.default_rng(seed)
  out = stream.copy()
  ends = np.flatnonzero(stream == 10)
  start = 0
  for end in [*ends.tolist(), len(stream)]:
    if end - start > 1:
      out[start:end] = stream[start:end][rng.permutation(end - start)]
    start = end + 1
  return out


class WithDomain:
  """A random-access source whose examples gain 'domain': the domain id (int32)."""

  def __init__(self, source: Any, domain: int):
    self.source, self.domain = source, domain

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    return {**self.source[i], "domain": np.int32(self.domain)}


class MixtureIterator:
  """Batches from grain's weighted mix of K per-domain pipelines, with settable weights.

  State (`get_state` / `set_state`, JSON bytes; grain's checkpoint handler saves it) holds
  the weights and grain's mixture state, so a restore rebuilds the same mixture first.
  """

  def __init__(self, names: list[str], sources: list[Any], weights: np.ndarray,
               local_batch: int, seed: int):
    self.names, self.sources, self.local_batch, self.seed = names, sources, local_batch, seed
    self._build(weights)

  def _build(self, weights: np.ndarray, state: dict[str, Any] | None = None) -> None:
    self.weights = np.asarray(weights, np.float64) / np.sum(weights)
    comps = {}
    for i, (name, src) in enumerate(zip(self.names, self.sources)):
      ds = grain.MapDataset.source(WithDomain(src, i))[jax.process_index()::
                                                         jax.process_count()]
      comps[name] = ds.shuffle(seed=self.seed + 7919 * i).repeat(None).to_iter_dataset()
    mix = grain.IterDataset.mix(comps, {n: float(w) for n, w in zip(self.names,
                                                                    self.weights)})
    self._it = iter(mix.batch(self.local_batch, drop_remainder=True))
    if state is not None:
      self._it.set_state(state)

  def set_weights(self, weights: np.ndarray) -> None:
    """New sampling weights; every domain continues where it was."""
    self._build(weights, self._it.get_state())

  def __iter__(self) -> MixtureIterator:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._it)

  def get_state(self) -> bytes:
    return json.dumps({"weights": self.weights.tolist(), "mixture": self._it.get_state()}
                      ).encode()

  def set_state(self, state: bytes) -> None:
    d = json.loads(state)
    self._build(np.asarray(d["weights"]), d["mixture"])

  def start_prefetch(self) -> None:  # part of grain's checkpoint-handler protocol
    pass


class Domains:
  """K domains of a training config: sources, the mixture iterator, loss weights and the
  ERMA / VA updates (see the module docstring)."""

  def __init__(self, cfg: mlc.ConfigDict, seq_len: int, local_batch: int):
    d = cfg.domains
    self.names = data_lib.config_list(d.names)
    k = len(self.names)
    user = data_lib.config_list(d.paths)
    if user and len(user) != k:
      raise ValueError(f"domains.paths lists {len(user)} entries for {k} domains.names")
    self.pi = W.check_pi(_floats("domains.pi", d.pi, k, 1.0 / k), k, name="domains.pi")
    w0 = W.check_loss_weights(_floats("domains.loss_weights", d.loss_weights, k, 1.0), k,
                              "domains.loss_weights")
    self.sampling = validation.one_of("domains.sampling", d.sampling, SAMPLING)
    self.loss_rule = validation.one_of("domains.loss_rule", d.loss_rule, LOSS_RULES)
    self.update_every = validation.positive_int("domains.update_every", d.update_every)
    if self.sampling == "va":
      validation.positive_int("domains.probe_size", d.probe_size)
      if d.probe_size < 2:
        raise ValueError(f"domains.probe_size={d.probe_size} must be >= 2 for sampling='va'")
    W.check_budget(local_batch * jax.process_count(), k, "data.global_batch")
    corrupt = data_lib.config_list(d.corrupt)
    for c in corrupt:
      validation.one_of("domains.corrupt entry", c, self.names)
    self.cfg, self.seq_len, self.local_batch = d, seq_len, local_batch
    dc = cfg.data
    suffixes = tuple(data_lib.config_list(dc.suffixes))
    self.train, self.val = [], []
    for i, name in enumerate(self.names):
      if user:
        root = paths.path(user[i])
        read = lambda split, root=root: data_lib.read_text_corpus(
            "files", split, path=str(root), val_fraction=dc.val_fraction, suffixes=suffixes,
            max_bytes=dc.max_bytes)
      else:
        files = stdlib_group_files(name, suffixes)
        root = paths.path(data_lib.stdlib_root())
        read = lambda split, files=files, root=root: read_files(
            files, root, split, dc.val_fraction, dc.max_bytes)
      for split, out in (("train", self.train), ("validation", self.val)):
        stream = read(split)
        if name in corrupt:
          stream = shuffle_within_lines(stream, dc.seed + 31 * i + (split == "validation"))
        out.append(data_lib.PackedWindows(stream, seq_len))
    self.w = W.normalize(self.pi, w0)
    if self.sampling == "fixed":
      p = W.check_vector("domains.sampling_weights", _floats(
          "domains.sampling_weights", d.sampling_weights, k, 1.0), k)
    else:
      p = self.pi
    self.v2 = np.ones(k)
    self.v2_count = 0
    self.round = 0
    self.iterator = MixtureIterator(self.names, self.train, p, local_batch, dc.seed)
    self.val_batches = [data_lib.eval_batches(v, local_batch, d.val_batches) for v in self.val]
    self._stats_fn = None

  @property
  def eval_data(self) -> list[dict[str, np.ndarray]]:
    """Every domain's validation batches (the trainer's overall evaluation)."""
    return [b for batches in self.val_batches for b in batches]

  # ---------------------------------------------------------------- per batch (host)
  def prepare(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The batch with token weights rescaled to the stratified objective (domain ids
    dropped)."""
    dom = batch["domain"].astype(np.int64)
    counts = np.bincount(dom, minlength=len(self.names))
    coef = (self.pi * self.w / np.maximum(counts, 1))[dom]
    wts = batch["weights"].astype(np.float64)
    wts = wts * (coef / np.maximum(wts.sum(1), 1.0))[:, None]
    return {k: v for k, v in batch.items() if k != "domain"} | {
        "weights": wts.astype(np.float32)}

  def due(self, step: int) -> bool:
    """Whether an update round follows step `step` (never when both rules are off)."""
    active = self.loss_rule != "none" or self.sampling == "va"
    return active and step % self.update_every == 0

  # ---------------------------------------------------------------- statistics
  def _fns(self, graphdef: Any) -> tuple[Any, Any]:
    if self._stats_fn is None:
      from tnx.train import steps

      def seq_loss(params, rest, seq):
        one = jax.tree.map(lambda x: x[None], seq)
        s, w, _ = steps.token_losses(graphdef, params, rest, one)
        return s / jnp.maximum(w, 1.0)

      per_seq = jax.jit(jax.vmap(seq_loss, (None, None, 0)))

      @jax.jit
      def grad_var(params, rest, seqs):  # [M, ...] sequences of one domain
        g = jax.vmap(jax.grad(seq_loss), (None, None, 0))(params, rest, seqs)
        return sum(jnp.sum(jnp.var(x.reshape(x.shape[0], -1), axis=0, ddof=1))
                   for x in jax.tree.leaves(g))

      self._stats_fn = (per_seq, grad_var)
    return self._stats_fn

  def domain_losses(self, graphdef: Any, params: Any, rest: Any) -> list[np.ndarray]:
    """Per-sequence validation losses (nats/token) of each domain."""
    per_seq, _ = self._fns(graphdef)
    out = []
    for batches in self.val_batches:
      seqs = [np.asarray(per_seq(params, rest, {k: b[k] for k in ("inputs", "targets",
                                                                    "weights")}))
              for b in batches]
      out.append(np.concatenate(seqs))
    return out

  def evaluate(self, graphdef: Any, params: Any, rest: Any) -> dict[str, float]:
    """{'<name>/bits_per_byte', '<name>/loss'} on each domain's validation batches."""
    out = {}
    for name, losses in zip(self.names, self.domain_losses(graphdef, params, rest)):
      out[f"{name}/loss"] = float(losses.mean())
      out[f"{name}/bits_per_byte"] = float(losses.mean() / math.log(2))
    return out

  def update(self, graphdef: Any, params: Any, rest: Any) -> dict[str, float]:
    """One ERMA / VA round at the current parameters; returns what to log."""
    d, k = self.cfg, len(self.names)
    losses = self.domain_losses(graphdef, params, rest)
    mean = np.array([x.mean() for x in losses])
    var = np.array([x.var() for x in losses])
    if self.loss_rule == "erma":
      g = 1.0 if d.erma_g == "constant" else 1.0 / math.sqrt(self.round + 1)
      self.w = np.asarray(W.erma_update(jnp.asarray(self.w), jnp.asarray(self.pi),
                                        jnp.asarray(mean), jnp.asarray(var),
                                        gamma1=d.erma_gamma1, gamma2=d.erma_gamma2, g=g),
                          np.float64)
    p = self.iterator.weights
    if self.sampling == "va":
      _, grad_var = self._fns(graphdef)
      est = np.zeros(k)
      for i, src in enumerate(self.train):
        rng = np.random.default_rng((self.iterator.seed, self.round, i))
        idx = rng.integers(0, len(src), d.probe_size)
        seqs = [src[int(j)] for j in idx]
        stacked = {key: np.stack([s[key] for s in seqs]) for key in ("inputs", "targets",
                                                                    "weights")}
        est[i] = float(grad_var(params, rest, stacked))
      self.v2 = est if self.v2_count == 0 else (1 - d.ema) * self.v2 + d.ema * est
      self.v2_count += 1
      batch = self.local_batch * jax.process_count()
      b = np.asarray(S.allocate(jnp.asarray(self.pi), jnp.asarray(self.w),
                                jnp.asarray(np.sqrt(self.v2)), batch))
      p = b / batch
      self.iterator.set_weights(p)
    self.round += 1
    out = {"round": self.round}
    for i, name in enumerate(self.names):
      out |= {f"{name}/w": float(self.w[i]), f"{name}/p": float(p[i]),
              f"{name}/val_loss": float(mean[i]), f"{name}/val_var": float(var[i])}
      if self.sampling == "va":
        out[f"{name}/v2"] = float(self.v2[i])
    return out

  # ---------------------------------------------------------------- resume
  def state_dict(self) -> dict[str, Any]:
    return {"w": self.w.tolist(), "v2": self.v2.tolist(), "v2_count": self.v2_count,
            "round": self.round}

  def load_state_dict(self, state: dict[str, Any]) -> None:
    self.w = np.asarray(state["w"], np.float64)
    self.v2 = np.asarray(state["v2"], np.float64)
    self.v2_count, self.round = int(state["v2_count"]), int(state["round"])
