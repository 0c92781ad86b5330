"""examples.atlas_recall: the recall metric on hand-made batches, equal parameter counts, and
the smoke job end to end (its recall equals the trainer's evaluation accuracy on the same
held-out batches; results and the figure go to the run directory, not docs/)."""

import json

import numpy as np
import pytest

from examples import atlas_recall as example
from tnx.train import config


def _published(docs):
  """The bytes of the docs/ files this example writes with --docs (None if absent)."""
  return {n: (docs / n).read_bytes() if (docs / n).exists() else None
          for n in ["atlas_recall.png"]}


def test_recall_counts_on_a_hand_made_batch():
  targets = np.array([[5, 6, 7, 8], [1, 2, 3, 4], [9, 9, 9, 9]])
  weights = np.array([[0, 1, 0, 1], [1, 1, 0, 0], [0, 0, 0, 0]], np.float32)
  pred = np.array([[0, 6, 0, 8],    # both queries right (non-query positions ignored)
                   [1, 0, 3, 4],    # one of two right
                   [9, 9, 9, 9]])   # no query: counts for nothing
  assert example.recall_counts(pred, targets, weights) == {
      "correct": 3, "queries": 4, "sequences_correct": 1, "sequences": 2}
  assert example.recall_counts(targets, targets, weights)["sequences_correct"] == 2


def test_recall_of_a_model_that_predicts_the_input():
  """A stand-in 'model' whose logits pick the input token: recall = the share of queries
  whose target equals the input at that position."""
  import jax.numpy as jnp
  from flax import nnx

  class Echo(nnx.Module):
    def __call__(self, x):
      return jnp.eye(16)[x]

  graphdef, params, rest = nnx.split(Echo(), nnx.Param, ...)
  batch = {"inputs": np.array([[3, 4, 5], [6, 7, 8]]),
           "targets": np.array([[3, 0, 5], [0, 0, 8]]),
           "weights": np.array([[1, 1, 1], [0, 1, 1]], np.float32)}
  r = example.recall(graphdef, params, rest, [batch, batch])
  assert r == {"accuracy": 6 / 10, "sequence_accuracy": 0.0, "queries": 10}
  with pytest.raises(ValueError, match="no query"):
    example.recall(graphdef, params, rest, [dict(batch, weights=0 * batch["weights"])])


def test_models_have_equal_parameter_counts():
  base, _ = config.parse_args(["--smoke", "--config.job.models=titans,omeganet,atlas,"
                               "deep_transformer"], default="atlas_recall")
  cfgs = example.build_models(base)
  counts = {n: example.count(c) for n, c in cfgs.items()}
  per_unit = 3 * base.model.d_model * base.model.n_layers   # one more MLP unit
  assert max(counts.values()) - min(counts.values()) <= per_unit
  assert cfgs["atlas"].model.memory.atlas.variant == "atlas"
  assert cfgs["titans"].model.mixers == "titans"
  with pytest.raises(ValueError, match="job.models"):
    example.model_config(base, "mamba")


def test_table_marks_diverged_runs():
  ok = {"params": 100, "mlp_hidden": 8, "wall_s": 5.0, "train_step_s": 1.0,
        "L=8": {"accuracy": 0.5, "sequence_accuracy": 0.25}}
  res = {"m": {"mqar_2": [ok], "mqar_4": [{"diverged": "nan", "wall_s": 2.0}],
               "needle": [dict(ok, **{"L=16": {"accuracy": 1.0, "sequence_accuracy": 1.0}})]}}
  res["n"] = {"needle": res["m"]["needle"], "mqar_2": [None]}  # interrupted: MQAR missing
  md = example.table(res, [2, 4], [8, 16], 8).splitlines()
  assert md[3] == "| n | 100 | 8 | - | - | 50.0 (25) | 100.0 (100) | 1 |"
  assert md[0] == ("| model | params | F | MQAR 2 pairs | MQAR 4 pairs | needle L=8 | "
                   "needle L=16 | train s |")
  assert md[2] == "| m | 100 | 8 | 50.0 (25) | diverged | 50.0 (25) | 100.0 (100) | 2 |"


def test_table_over_seeds():
  """Mean [min, max] over seeds with the mean sequence share; a missing seed and a diverged
  one are counted; one '*' per restart."""
  def r(acc, seq, restarts=()):
    return {"params": 10, "mlp_hidden": 4, "wall_s": 9.0, "train_step_s": 2.0,
            "restarts": list(restarts),
            "L=8": {"accuracy": acc, "sequence_accuracy": seq}}
  res = {"a": {"mqar_2": [r(0.5, 0.0), r(0.25, 0.5, ["x"]), r(0.75, 1.0)],
               "needle": [r(1.0, 1.0), None, {"diverged": ["nan"], "wall_s": 1.0}]}}
  md = example.table(res, [2], [8], 8).splitlines()
  assert md[2] == ("| a | 10 | 4 | 50.0 [25.0, 75.0] (50)* | 100.0 [100.0, 100.0] (1/3 seeds) "
                   "(1 non-finite) (100) | 8 |")
  assert example.cell([{"diverged": ["nan"]}] * 2, "L=8") == "non-finite (2/2)"
  assert example.cell([None, None], "L=8") == "-"


def test_non_finite_runs_restart_at_a_lower_lr(tmp_path, monkeypatch):
  base, _ = config.parse_args(["--smoke", f"--config.workdir={tmp_path}"],
                              default="atlas_recall")
  seen = []

  def diverge(cfg):
    seen.append((cfg.workdir, cfg.opt.peak_lr))
    raise FloatingPointError("non-finite loss (nan) at step 3; the update was skipped")

  monkeypatch.setattr(example.trainer, "train", diverge)
  cfg = example.task_config(example.model_config(base, "titans"), "titans", "mqar", 2, seed=1)
  assert cfg.seed == 1 and cfg.data.mqar_pairs == 2 and cfg.data.source == "mqar"
  r = example.train_and_recall(cfg, False, [])
  lr = base.opt.peak_lr
  where = str(tmp_path / "seed1" / "titans" / "mqar_2")
  assert seen == [(where, lr), (where + f"_lr{lr / 2:g}", lr / 2)]
  assert r["diverged"] == [f"peak_lr {lr:g}: non-finite loss (nan) at step 3",
                           f"peak_lr {lr / 2:g}: non-finite loss (nan) at step 3"]
  # a later job finishing the runs follows the recorded restarts instead of resuming a run
  # that has no checkpoint, and reports the same divergence
  seen.clear()
  again = example.train_and_recall(example.task_config(
      example.model_config(base, "titans"), "titans", "mqar", 2, seed=1), True, [])
  assert seen == [] and again["diverged"] == r["diverged"]


def test_finished_runs(tmp_path):
  run = tmp_path / "seed0" / "titans" / "mqar_4"
  (run / "checkpoints").mkdir(parents=True)
  assert not example.finished(str(run))          # started, not ended
  (run / "summary.json").write_text("{}")
  assert example.finished(str(run))
  other = tmp_path / "seed0" / "titans" / "mqar_8"
  (tmp_path / "seed0" / "titans" / "mqar_8_lr0.0015").mkdir()   # diverged, restarted
  assert example.finished(str(other))
  assert not example.finished(str(tmp_path / "seed0" / "titans" / "needle"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("atlas_recall")
  published = _published(example.DOCS)   # what --docs would overwrite
  res = example.main(["--smoke", f"--config.workdir={tmp}"])
  assert _published(example.DOCS) == published
  return res, tmp


@pytest.mark.slow  # two memory families compiled 4 times: 150-380 s on the loaded CPU
def test_smoke_job(run):
  res, tmp = run
  results = res["results"]
  assert sorted(results) == ["atlas", "titans"] and res["pairs"] == [2]
  for r in results.values():
    (mq,), (nd,) = r["mqar_2"], r["needle"]
    # the same held-out batches as the trainer's final evaluation: the same accuracy
    assert mq["L=32"]["accuracy"] == pytest.approx(mq["trainer_accuracy"])
    assert nd["L=32"]["accuracy"] == pytest.approx(nd["trainer_accuracy"])
    assert mq["L=32"]["queries"] == 8 * 4 and nd["L=16"]["queries"] == 8
    assert all(0 <= nd[k]["accuracy"] <= 1 for k in ("L=16", "L=32"))
    assert np.isfinite(mq["eval_loss"])
  assert abs(results["atlas"]["mqar_2"][0]["params"]
             - results["titans"]["mqar_2"][0]["params"]) <= 3 * 32
  saved = json.loads((tmp / "results.json").read_text())
  assert saved["seeds"] == [0] and results["titans"]["needle"][0]["seed"] == 0
  assert saved["results"]["titans"]["needle"][0]["L=16"] == results["titans"]["needle"][0]["L=16"]
  md = (tmp / "results.md").read_text().splitlines()
  assert md[0].startswith("| model | params | F | MQAR 2 pairs | needle L=16 | needle L=32 |")
  assert (tmp / "atlas_recall.png").read_bytes()[:4] == b"\x89PNG"
  with pytest.raises(SystemExit, match="exists already"):   # never overwrites a run
    example.main(["--smoke", f"--config.workdir={tmp}"])


def test_help(capsys):
  with pytest.raises(SystemExit) as e:
    example.main(["--help"])
  assert e.value.code == 0 and "  job.pairs = '4,8,16,24'" in capsys.readouterr().out
