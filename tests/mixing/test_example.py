"""examples.data_mixing: each experiment's smoke variant runs into a temporary workdir and
writes its table, JSON and figures there (never into docs/)."""

import json
import os

import pytest

from examples import data_mixing


@pytest.mark.parametrize("experiment, figure", [
    ("fig1", "fig1_R1.png"),
    pytest.param("fig2", "fig2_different.png", marks=pytest.mark.slow),
    pytest.param("fig3", "fig3_noise0.8.png", marks=pytest.mark.slow)])
def test_smoke(tmp_path, experiment, figure):
  docs = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))), "docs")
  before = set(os.listdir(docs))
  out = data_mixing.main([f"--experiment={experiment}", "--smoke",
                          f"--config.workdir={tmp_path}"])
  run = tmp_path / experiment
  assert os.path.getsize(run / figure) > 1000
  res = json.loads((run / "results.json").read_text())["results"]
  methods = next(iter(res.values()))["methods"]
  assert set(methods) == {"uniform", "loss", "sampling", "both"}
  assert "| method |" in (run / "results.md").read_text()
  assert out["out"] == str(run)
  assert set(os.listdir(docs)) == before


@pytest.mark.slow
def test_lm_smoke(tmp_path):
  """The LM experiment's smoke variant (the 'both' method through tnx.train; slow: a full
  trainer run, its mechanics are tested in test_train_domains)."""
  out = data_mixing.main(["--experiment=lm", "--smoke", f"--config.workdir={tmp_path}"])
  assert os.path.getsize(tmp_path / "lm" / "lm_curves.png") > 1000
  both = out["results"]["methods"]["both"]
  assert set(both["bpb"]) == {"tests", "net", "text", "core"} and both["clean_bpb"] > 0


def test_unknown_experiment_raises(tmp_path):
  with pytest.raises(ValueError, match="--experiment must be one of"):
    data_mixing.main(["--experiment=fig9", f"--config.workdir={tmp_path}"])
  with pytest.raises(ValueError, match="unknown part 'fig9'"):
    data_mixing.main(["--config=data_mixing:fig9", f"--config.workdir={tmp_path}"])
