"""examples.tnt_recall: the models are the ones named (TNT ablations change exactly their
field), at equal parameter counts, and the smoke job runs end to end over two seeds."""

import json

import numpy as np
import pytest

from examples import atlas_recall, tnt_recall
from tnx.train import config


def test_models_are_the_named_ablations_at_equal_parameter_counts():
  base, _ = config.parse_args([], default="tnt_recall")
  cfgs = atlas_recall.build_models(base)
  assert list(cfgs) == ["titans", "ttt_mlp", "attention", "swa", "tnt", "tnt_L4",
                        "tnt_no_global", "tnt_no_qk", "tnt_no_reset"]
  counts = {n: atlas_recall.count(c) for n, c in cfgs.items()}
  per_unit = 3 * base.model.d_model * base.model.n_layers   # one more MLP unit
  assert max(counts.values()) - min(counts.values()) <= per_unit
  tnt = {n: c.model.memory.tnt for n, c in cfgs.items() if n.startswith("tnt")}
  ref = tnt["tnt"].to_dict()
  changed = {n: {k for k, v in t.to_dict().items() if v != ref[k]} for n, t in tnt.items()}
  assert changed == {"tnt": set(), "tnt_L4": {"local_chunk_sizes"},
                     "tnt_no_global": {"use_global"}, "tnt_no_qk": {"qk_projection"},
                     "tnt_no_reset": {"shard_length"}}
  assert tnt["tnt_L4"].local_chunk_sizes == (1, 2, 4, 8)
  assert not tnt["tnt_no_global"].use_global and not tnt["tnt_no_qk"].qk_projection
  assert tnt["tnt_no_reset"].shard_length > 4 * base.data.seq_len  # no reset at any needle L
  assert cfgs["swa"].model.window == ref["shard_length"] == 16
  assert {n: c.model.mixers for n, c in cfgs.items() if not n.startswith("tnt")} == {
      "titans": "titans", "ttt_mlp": "ttt_mlp", "attention": "attention", "swa": "swa"}
  config.validate(cfgs["tnt_no_reset"])  # the S_L beyond L is a valid TNT config
  # a job running some of the models builds them as the whole job does
  part, _ = config.parse_args(["--config.job.models=titans,tnt",
                               f"--config.job.match_to={base.job.models}"], default="tnt_recall")
  some = atlas_recall.build_models(part)
  assert {n: c.model.mlp_hidden for n, c in some.items()} == {
      n: cfgs[n].model.mlp_hidden for n in ("titans", "tnt")}


def test_bad_job_fields_are_refused(tmp_path):
  base, _ = config.parse_args(["--config.job.match_to=titans,mamba"], default="tnt_recall")
  with pytest.raises(ValueError, match="job.match_to: 'mamba'"):
    atlas_recall.build_models(base)
  with pytest.raises(ValueError, match="no memory family"):
    atlas_recall._mixer("attention", window=8)
  with pytest.raises(ValueError, match="job.seeds is empty"):
    tnt_recall.main(["--smoke", "--config.job.seeds=", f"--config.workdir={tmp_path / 'w'}"])
  assert not (tmp_path / "w").exists()   # refused before anything is written


@pytest.mark.slow  # three models compiled for two tasks and two seeds: 1-3 min
def test_smoke_job_over_two_seeds(tmp_path):
  res = tnt_recall.main(["--smoke", f"--config.workdir={tmp_path}", "--config.job.seeds=0,1"])
  assert res["seeds"] == [0, 1] and sorted(res["results"]) == ["swa", "tnt", "tnt_no_global"]
  for r in res["results"].values():
    runs = r["mqar_2"] + r["needle"]
    assert [x["seed"] for x in r["mqar_2"]] == [0, 1]
    for x in runs:  # the recall equals the trainer's evaluation on the same batches
      assert x[f"L={32 if x in r['mqar_2'] else 16}"]["accuracy"] <= 1
      assert np.isfinite(x["eval_loss"])
    assert r["mqar_2"][0]["L=32"]["accuracy"] == pytest.approx(r["mqar_2"][0]["trainer_accuracy"])
  md = (tmp_path / "results.md").read_text()
  assert "over the init seeds 0, 1" in md and "] (" in md.splitlines()[2]
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["results"]["tnt"]["needle"][1]["seed"] == 1
  assert (tmp_path / "tnt_recall.png").read_bytes()[:4] == b"\x89PNG"
  # finishing it again reuses every run (--resume) and gives the same recall
  again = tnt_recall.main(["--smoke", f"--config.workdir={tmp_path}", "--config.job.seeds=0,1",
                           "--resume"])
  assert again["results"]["tnt"]["needle"][1]["L=16"] == res["results"]["tnt"]["needle"][1]["L=16"]
  # reuse_only tabulates the finished runs and trains nothing: seed 2 is reported as not run
  only = tnt_recall.main(["--smoke", f"--config.workdir={tmp_path}", "--config.job.seeds=0,2",
                          "--config.job.reuse_only=True"])
  assert only["results"]["swa"]["mqar_2"][1] is None and not (tmp_path / "seed2").exists()
  assert only["results"]["swa"]["mqar_2"][0]["L=32"] == res["results"]["swa"]["mqar_2"][0]["L=32"]
  row = (tmp_path / "results.md").read_text().splitlines()[2]
  assert "(1/2 seeds)" in row
