"""The main job's wiring (equal parameter counts, stage 2 continues stage 1 at a smaller local
chunk) and its smoke run end to end."""

import json

import pytest

from examples import tnt_lm
from tnx.models import available_families
from tnx.train import config


def _published(docs):
  """The bytes of the docs/ files this example writes with --docs (None if absent)."""
  names = ["tnt_lm_curves.png"]
  return {n: (docs / n).read_bytes() if (docs / n).exists() else None for n in names}


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


def test_first_reach_interpolates_between_evaluations():
  curve = [{"loss": 3.0, "seconds": 10.0}, {"loss": 2.0, "seconds": 20.0},
           {"loss": 1.0, "seconds": 30.0}]
  assert tnt_lm.first_reach(curve, 2.5, "seconds") == pytest.approx(15.0)
  assert tnt_lm.first_reach(curve, 2.0, "seconds") == 20.0
  assert tnt_lm.first_reach(curve, 3.5, "seconds") == 10.0   # reached at the first point
  assert tnt_lm.first_reach(curve, 0.5, "seconds") is None


def test_serial_depth():
  base, _ = config.parse_args([], default="tnt_lm")
  base.data.seq_len = 4096
  base.model.mixers = "titans"
  base.model.memory.titans.chunk_size = 8
  assert tnt_lm.chunk_label(base) == ("C=8", 512)          # L / C
  base.model.mixers = "tnt"
  t = base.model.memory.tnt
  t.global_chunk_size, t.shard_length, t.local_chunk_sizes = 1024, 512, (64,)
  assert tnt_lm.chunk_label(base) == ("C_L=64 C_G=1024 S_L=512", 4 + 8)  # L/C_G + S_L/C_L
  t.local_chunk_sizes = (8, 16)                               # locals run side by side
  assert tnt_lm.chunk_label(base)[1] == 4 + 64


@pytest.mark.slow
def test_smoke_run(tmp_path):
  published = _published(tnt_lm.DOCS)   # what --docs would overwrite
  results = tnt_lm.main(["--smoke", f"--config.workdir={tmp_path}"])
  assert _published(tnt_lm.DOCS) == published
  table = {r["name"]: r for r in results["summary"]["table"]}
  have_tnt = "tnt" in available_families()
  assert sorted(table) == (["titans", "tnt_stage1", "tnt_stage2"] if have_tnt else
                           ["attention", "titans"])
  for r in table.values():
    assert 4.0 < r["bpb"] < 8.5 and r["tokens_per_s"] > 0 and r["train_s"] > 0
    assert r["tokens_per_s_interleaved"] > 0
  summary = results["summary"]
  assert 0 < summary["overhead_s"] < summary["job_wall_s"]
  if have_tnt:
    assert table["tnt_stage1"]["params"] == table["tnt_stage2"]["params"]
    assert table["titans"]["chunk"] == "C=8"
    # smoke: L=32, C=8 -> 4 steps; TNT L/C_G + S_L/C_L = 2 + 2, stage 2 2 + 4
    assert [table[n]["serial_depth"] for n in ("titans", "tnt_stage1", "tnt_stage2")] == [
        4, 4, 6]
    assert summary["speedup_tokens_per_s"] == pytest.approx(
        table["tnt_stage1"]["tokens_per_s"] / table["titans"]["tokens_per_s"])
    assert [s for s, _ in results["tnt_stage2"]["train_losses"]] == [1, 2]
    # validation every 2 steps and at the end; stage 2 continues stage 1's curve
    assert [p["step"] for p in results["titans"]["val_curve"]] == [2, 3]
    assert [p["step"] for p in results["tnt_stage2"]["val_curve"]] == [2, 3, 5]
    seconds = [p["seconds"] for p in results["tnt_stage2"]["val_curve"]]
    assert seconds == sorted(seconds) and seconds[0] > 0
    # the default target is the worse model's best loss: both reach it, one exactly at its end
    target = summary["target_loss"]
    for name in ("titans", "tnt_stage2"):
      assert table[name]["time_to_target_s"] > 0 and table[name]["tokens_to_target"] > 0
      assert table[name]["time_to_target_interleaved_s"] > 0
    assert target == max(min(p["loss"] for p in results[n]["val_curve"])
                         for n in ("titans", "tnt_stage2"))
    assert len(summary["reading"].split(". ")) == 2
  saved = json.loads((tmp_path / "results.json").read_text())
  assert set(saved) == set(results)
  md = (tmp_path / "results.md").read_text()
  assert md.startswith("| model | chunks | serial depth | params | tokens/s (run) |")
  assert len([line for line in md.splitlines() if line.startswith("| ")]) == 1 + len(table)
  assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
  # finishing an interrupted job: every run is complete, so --resume only re-evaluates
  again = tnt_lm.main(["--smoke", f"--config.workdir={tmp_path}", "--resume"])
  assert {r["name"]: r["bpb"] for r in again["summary"]["table"]} == {
      n: r["bpb"] for n, r in table.items()}


def test_help(capsys):
  with pytest.raises(SystemExit) as e:
    tnt_lm.main(["--help"])
  out = capsys.readouterr().out
  assert e.value.code == 0 and "  job.stage1_steps = 160" in out and "[--docs]" in out
  assert "The main job: Titans (chunk 8) vs TNT of equal parameter count" in out
