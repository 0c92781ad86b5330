"""tnx.train.domains: stdlib domain groups, corruption, the weighted grain mixture (weights,
changing them mid-stream, exact state round trip), the stratified token weights, and the
trainer with ERMA + VA including exact resume."""

import json

import ml_collections as mlc
import numpy as np
import pytest

from tnx.train import data as data_lib
from tnx.train import domains as D


class Range:
  """Examples {'x': i} for i in [lo, hi)."""

  def __init__(self, lo, hi, seq_len=4):
    self.lo, self.hi, self.seq_len = lo, hi, seq_len

  def __len__(self):
    return self.hi - self.lo

  def __getitem__(self, i):
    v = self.lo + i
    return {"inputs": np.full(self.seq_len, v, np.int32), "targets": np.full(self.seq_len, v,
                                                                            np.int32),
            "weights": np.ones(self.seq_len, np.float32)}


def test_stdlib_groups_are_disjoint_and_cover_the_corpus():
  files = {g: {str(f) for f in D.stdlib_group_files(g, (".py",))}
           for g in (*D.STDLIB_GROUPS, D.OTHER)}
  assert all(len(v) > 20 for v in files.values()), {k: len(v) for k, v in files.items()}
  union = set().union(*files.values())
  assert sum(len(v) for v in files.values()) == len(union)
  all_files = {str(f) for f in data_lib.list_files(data_lib.stdlib_root(), (".py",))}
  assert union == all_files
  assert any("/json/" in f for f in files["text"]) and any("/http/" in f for f in files["net"])
  with pytest.raises(ValueError, match="domains.names entry"):
    D.stdlib_group_files("games", (".py",))


def test_shuffle_within_lines_keeps_each_lines_bytes():
  text = b"def f(x):\n  return x + 1\n\nclass A: pass"
  stream = np.frombuffer(text, np.uint8).astype(np.int32)
  out = D.shuffle_within_lines(stream, 0)
  assert not np.array_equal(out, stream)
  lines_in = bytes(stream.astype(np.uint8)).split(b"\n")
  lines_out = bytes(out.astype(np.uint8)).split(b"\n")
  assert [sorted(a) for a in lines_in] == [sorted(b) for b in lines_out]


def _mixture(weights, batch=10):
  return D.MixtureIterator(["a", "b"], [Range(0, 1000), Range(1000, 2000)],
                           np.asarray(weights), batch, seed=3)


def test_mixture_proportions_and_domain_ids():
  it = _mixture([0.8, 0.2])
  dom = np.concatenate([next(it)["domain"] for _ in range(20)])
  np.testing.assert_allclose(np.bincount(dom) / dom.size, [0.8, 0.2], atol=0.02)
  b = next(it)
  assert np.all((b["inputs"][:, 0] >= 1000) == (b["domain"] == 1))


def test_changing_weights_continues_every_domain():
  """After set_weights each domain's stream continues where it stopped: the examples seen
  are exactly the first ones of that domain's shuffled order, none repeated or skipped."""
  ref = _mixture([0.5, 0.5])
  a_order = [int(x) for x in np.concatenate([next(ref)["inputs"][:, 0] for _ in range(60)])
             if x < 1000]
  it = _mixture([0.5, 0.5])
  seen = [next(it)["inputs"][:, 0] for _ in range(3)]
  it.set_weights(np.array([0.9, 0.1]))
  seen += [next(it)["inputs"][:, 0] for _ in range(3)]
  a_seen = [int(x) for x in np.concatenate(seen) if x < 1000]
  assert a_seen == a_order[:len(a_seen)] and len(a_seen) == 15 + 27


def test_state_round_trip_restores_weights_and_position():
  it = _mixture([0.5, 0.5])
  for _ in range(2):
    next(it)
  it.set_weights(np.array([0.3, 0.7]))
  next(it)
  state = it.get_state()
  expect = [next(it)["inputs"] for _ in range(4)]
  fresh = _mixture([0.5, 0.5])
  fresh.set_state(state)
  np.testing.assert_allclose(fresh.weights, [0.3, 0.7])
  for e in expect:
    np.testing.assert_array_equal(next(fresh)["inputs"], e)
  assert json.loads(state)["weights"] == [0.3, 0.7]


def test_prepare_gives_the_stratified_objective():
  """sum(w' nll) / max(sum w', 1), the trainer's unchanged loss, equals
  sum_i pi_i w_i mean_{j in i} l_j with l_j the sequence's mean token loss."""
  dom = D.Domains.__new__(D.Domains)
  dom.names, dom.pi, dom.w = ["a", "b", "c"], np.array([0.2, 0.3, 0.5]), np.array([3.0, 1.0,
                                                                                   0.2])
  dom.w = dom.w / np.sum(dom.pi * dom.w)
  rng = np.random.default_rng(0)
  domain = np.array([0, 0, 1, 2, 2, 2, 1, 0], np.int32)
  weights = (rng.random((8, 6)) < 0.8).astype(np.float32)
  weights[:, 0] = 1
  nll = rng.random((8, 6)) * 3
  batch = {"inputs": np.zeros((8, 6), np.int32), "targets": np.zeros((8, 6), np.int32),
           "weights": weights, "domain": domain}
  out = dom.prepare(batch)
  assert "domain" not in out
  w2 = out["weights"].astype(np.float64)
  loss = np.sum(w2 * nll) / max(np.sum(w2), 1.0)
  seq = (nll * weights).sum(1) / weights.sum(1)
  expect = sum(dom.pi[i] * dom.w[i] * seq[domain == i].mean() for i in range(3))
  np.testing.assert_allclose(loss, expect, rtol=1e-6)


def _lm_cfg(tmp_path, steps=8, **domains):
  from tnx.configs import lm
  c = lm.get_config("smoke")
  c.workdir = str(tmp_path)
  c.data.seq_len, c.data.global_batch, c.data.max_bytes = 32, 8, 30_000
  c.data.val_fraction = 0.2
  c.train.steps, c.train.ckpt_every, c.train.eval_every, c.train.log_every = steps, 4, 0, 1
  c.train.eval_batches, c.train.plot = 1, False
  if "domains" not in c:
    c.domains = D.default_config()
  c.domains.names = "text,net"
  c.domains.update_every, c.domains.probe_size, c.domains.val_batches = 2, 2, 1
  for k, v in domains.items():
    c.domains[k] = v
  return c


@pytest.mark.slow
def test_trainer_with_erma_and_va_resumes_exactly(tmp_path):
  """8 steps with updates every 2 and checkpoints at 4 and 8; then resume from step 4 in the
  same workdir: steps 5-8 reproduce the losses, loss weights and sampling weights."""
  from tnx.train import metrics, trainer
  kw = dict(loss_rule="erma", sampling="va", corrupt="net", erma_gamma2=5.0)
  cfg = _lm_cfg(tmp_path, **kw)
  full = trainer.train(cfg)
  rows = metrics.read_jsonl(tmp_path / "metrics.jsonl")
  mixing = {r["step"]: r for r in rows if r.get("kind") == "mixing"}
  assert sorted(mixing) == [2, 4, 6, 8]
  assert {"text/w", "net/p", "net/val_var", "net/v2"} <= set(mixing[8])
  assert "text/bits_per_byte" in full["eval"] and "net/loss" in full["eval"]
  assert mixing[8]["net/p"] != 0.5  # VA moved the sampling weights
  losses = trainer.final_losses(tmp_path)
  again = _lm_cfg(tmp_path, **kw)
  again.train.resume, again.train.resume_step = True, 4
  trainer.train(again)
  rows2 = metrics.read_jsonl(tmp_path / "metrics.jsonl")
  mixing2 = {r["step"]: r for r in rows2 if r.get("kind") == "mixing"}
  losses2 = trainer.final_losses(tmp_path)
  assert sorted(losses2) == sorted(losses)
  np.testing.assert_allclose([losses2[s] for s in sorted(losses)],
                             [losses[s] for s in sorted(losses)], rtol=1e-6)
  for step in (6, 8):
    for key in ("text/w", "net/w", "text/p", "net/p", "net/v2"):
      np.testing.assert_allclose(mixing2[step][key], mixing[step][key], rtol=1e-6)


def test_domain_config_errors(tmp_path):
  from tnx.train import trainer
  with pytest.raises(ValueError, match="domains.pi must sum to 1"):
    trainer.train(_lm_cfg(tmp_path / "a", pi="0.5,0.6"))
  with pytest.raises(ValueError, match="domains.sampling must be one of"):
    trainer.train(_lm_cfg(tmp_path / "b", sampling="neyman"))
  with pytest.raises(ValueError, match="domains.paths lists 1 entries for 2"):
    trainer.train(_lm_cfg(tmp_path / "c", paths=str(tmp_path)))
  assert isinstance(D.default_config(), mlc.ConfigDict)
