"""The main job's wiring (equal parameter counts, stage 2 continues stage 1 at a smaller local
chunk) and its smoke run end to end."""

import json

import pytest

from examples import tnt_lm
from tnx.models import available_families
from tnx.train import config


def test_configs_have_equal_params_and_stage2_wiring(tmp_path):
  base, _ = config.parse_args(["--smoke", f"--config.workdir={tmp_path}"], default="tnt_lm")
  runs = tnt_lm.build_configs(base)
  if "tnt" not in available_families():
    assert set(runs) == {"titans", "attention"}
    return
  assert list(runs) == ["titans", "tnt_stage1", "tnt_stage2"]
  t, s1, s2 = runs["titans"], runs["tnt_stage1"], runs["tnt_stage2"]
  n_t, n_1, n_2 = tnt_lm.count(t), tnt_lm.count(s1), tnt_lm.count(s2)
  assert n_1 == n_2  # stage 2 changes only chunk sizes
  per_column = 3 * t.model.d_model * t.model.n_layers  # one more MLP unit per layer
  assert abs(n_t - n_1) <= 4 * per_column
  assert t.model.memory.titans.chunk_size == base.job.titans_chunk
  assert s2.train.init_from == s1.workdir
  assert s2.model.memory.tnt.local_chunk_sizes == (int(base.job.stage2_local_chunks),)
  assert s1.model.memory.tnt.local_chunk_sizes == (int(base.job.tnt_local_chunks),)


@pytest.mark.slow
def test_smoke_run(tmp_path):
  results = tnt_lm.main(["--smoke", f"--config.workdir={tmp_path}"])
  table = results["summary"]["table"]
  assert len(table) in (2, 3) and all(r["bpb"] < 8.5 for r in table)
  saved = json.loads((tmp_path / "results.json").read_text())
  assert set(saved) == set(results)
  assert (tmp_path / "curves.png").exists() and (tmp_path / "results.md").exists()
