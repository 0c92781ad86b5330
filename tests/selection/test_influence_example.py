"""examples.influence_distillation and benchmarks.selection: config variants and command line
(fast), and the smoke runs of both experiments and of the benchmark into tmp dirs (slow: each
compiles a dozen LM / MLP functions)."""

import json
import os

import numpy as np
import pytest

from tnx.configs import influence_distillation as config

DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs")


def test_config_variants():
  full = config.get_config()
  assert full.experiment == "sandbox" and full.sandbox.per_domain * full.sandbox.num_domains == 4000
  smoke = config.get_config("lm,smoke")
  assert smoke.experiment == "lm" and smoke.workdir.endswith("_smoke")
  assert smoke.lm.pool_size < full.lm.pool_size and smoke.lm.k < smoke.lm.pool_size
  with pytest.raises(ValueError, match="config argument 'big' is unknown"):
    config.get_config("big")


def test_command_line():
  from examples import influence_distillation as ex
  cfg = ex.parse(["--experiment=lm", "--smoke", "--config.lm.k=8"])
  assert cfg.experiment == "lm" and cfg.lm.k == 8 and cfg.lm.pool_size == 96
  with pytest.raises(ValueError, match="experiment must be one of"):
    ex.parse(["--experiment=vision"])


def _docs_pngs():
  return {f: os.path.getmtime(os.path.join(DOCS, f)) for f in os.listdir(DOCS)
          if f.startswith("id_")}


@pytest.mark.slow
def test_sandbox_smoke(tmp_path):
  from examples import influence_distillation as ex
  before = _docs_pngs()
  res = ex.main(["--experiment=sandbox", "--smoke", f"--config.workdir={tmp_path}"])
  out = tmp_path / "sandbox"
  assert (out / "results.json").exists() and (out / "id_sandbox_landmarks.png").exists()
  for kind in ("gd", "adam"):
    assert res["taylor"][kind]["slope1"] == pytest.approx(2.0, abs=0.2)
    assert res["taylor"][kind]["slope2"] == pytest.approx(3.0, abs=0.3)
  last = res["landmarks"]["jvp@1e-06"]["rel_error"][-1]  # every sample a landmark
  assert last < 1e-2
  assert _docs_pngs() == before  # smoke output never touches docs/
  json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_lm_smoke(tmp_path):
  from examples import influence_distillation as ex
  res = ex.main(["--experiment=lm", "--smoke", f"--config.workdir={tmp_path}"])
  methods = {r["method"] for r in res["rows"]}
  assert methods == {"warm-up only", "uniform", "mid_ppl", "embed_sim", "exact", "influence",
                     "influence_rr"}
  assert all(np.isfinite(r["loss"]) for r in res["rows"])
  assert (tmp_path / "lm" / "id_lm_loss.png").exists()


@pytest.mark.slow
def test_benchmark_smoke():
  from benchmarks import selection
  rows = selection.main(["--method=influence", "--smoke"])
  paths = {r["path"] for r in rows}
  assert "forward+backward" in paths and any(p.startswith("JVP") for p in paths)
  assert all(r["examples_per_s"] > 0 for r in rows)
  with pytest.raises(ValueError, match="--method must be one of"):
    selection.main(["--method=lesss"])
