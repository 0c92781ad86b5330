"""The example's smoke configuration runs end to end into a temporary workdir."""

import json
import os

from examples import topics_synthetic


def test_smoke_run(tmp_path):
  docs_before = sorted(os.listdir("docs")) if os.path.isdir("docs") else []
  out = topics_synthetic.main(["--smoke", f"--config.workdir={tmp_path}"])
  for name in ("results.json", "results.md", *topics_synthetic.FIGURES):
    assert (tmp_path / name).exists()
  seed = out["seeds"][0]
  assert len(seed["real_reid"]) == 4 and all(0 <= r <= 1 for r in seed["real_reid"])
  for run in seed["runs"]:
    assert run["spent_epsilon"] <= run["epsilon"] * (1 + 1e-3)
    assert all(0 <= r <= 1 for r in run["synthetic_reid"])
  export = seed["export"]
  assert export["tfrecord_matches_parquet"] and export["parquet_users"] == 1500
  for name in ("q_within.json", "q_across.json", "output_parameters.json",
               "synthetic_users.parquet"):
    assert os.path.exists(os.path.join(export["dir"], name))
  assert json.loads((tmp_path / "results.json").read_text())["config"]["docs"] is False
  assert (sorted(os.listdir("docs")) if os.path.isdir("docs") else []) == docs_before
