"""examples.icl_scaling: command line, config variants and the smoke run of every experiment
into a temporary workdir (docs/ is never written)."""

import json
import os

import pytest

from examples import icl_scaling
from tnx.configs import icl_scaling as cfg_lib


def test_config_variants_and_cli():
  assert cfg_lib.get_config("E3").experiment == "E3"
  smoke = cfg_lib.get_config("E2,smoke")
  assert smoke.experiment == "E2" and smoke.workdir.endswith("_smoke")
  with pytest.raises(ValueError, match="unknown token 'E9'"):
    cfg_lib.get_config("E9")
  cfg = icl_scaling.parse(["--experiment=E4", "--smoke", "--config.e4.n=30", "--docs"])
  assert (cfg.experiment, cfg.e4.n, cfg.docs) == ("E4", 30, True)
  with pytest.raises(ValueError, match="experiment must be one of"):
    icl_scaling.parse(["--experiment=E7"])
  with pytest.raises(ValueError, match="spectrum must be"):
    icl_scaling.spectrum("flat", 3)


def _run(tmp_path, experiment):
  docs_before = sorted(os.listdir("docs")) if os.path.isdir("docs") else []
  res = icl_scaling.main([f"--experiment={experiment}", "--smoke",
                          f"--config.workdir={tmp_path}"])
  out = tmp_path / experiment
  saved = json.loads((out / "results.json").read_text())
  assert saved["config"]["experiment"] == experiment
  assert (out / "results.md").exists() and any(p.suffix == ".png" for p in out.iterdir())
  if os.path.isdir("docs"):
    assert sorted(os.listdir("docs")) == docs_before
  return res


def test_e4_smoke(tmp_path):
  res = _run(tmp_path, "E4")
  for name, t in res["targets"].items():
    assert t["kkt"]["pg_residual"] < 1e-8, name
    assert abs(sum(t["pi"]) - 1) < 1e-12


@pytest.mark.slow
def test_e1_smoke(tmp_path):
  res = _run(tmp_path, "E1")
  assert all(c["mc_mean"][0] > 0 for c in res["curves"].values())


@pytest.mark.slow
def test_e2_smoke(tmp_path):
  res = _run(tmp_path, "E2")
  assert set(res["rows"]) == {20, 60}


@pytest.mark.slow
def test_e3_smoke(tmp_path):
  res = _run(tmp_path, "E3")
  assert res["training_option"]["start"] == "random"
  assert (tmp_path / "E3" / "n4" / "metrics.jsonl").exists()
