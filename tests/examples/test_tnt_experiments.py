"""examples.tnt_experiments: the arms' wiring, the seed statistics, and both experiments'
smoke runs end to end (chunk_sweep reusing time_to_target's stage-1 runs)."""

import json

import pytest

from examples import tnt_experiments as tx
from tnx.train import config


def test_arms_have_equal_params_and_their_chunks(tmp_path):
  base, _ = config.parse_args(["--smoke", "--config.exp.titans_chunks=2,4",
                               "--config.exp.tnt_local_chunks=2,4"], default="tnt_experiments")
  arms = tx.arm_configs(base, tmp_path)
  assert list(arms) == ["titans_C2", "titans_C4", "tnt_CL2", "tnt_CL4"]
  assert arms["titans_C4"].model.memory.titans.chunk_size == 4
  assert arms["tnt_CL2"].model.memory.tnt.local_chunk_sizes == (2,)
  counts = {a: tx.tnt_lm.count(c) for a, c in arms.items()}
  assert counts["tnt_CL2"] == counts["tnt_CL4"]
  per_column = 3 * base.model.d_model * base.model.n_layers
  assert abs(counts["titans_C2"] - counts["tnt_CL4"]) <= 4 * per_column
  assert tx.seeded(arms["titans_C2"], 2).workdir.endswith("titans_C2/seed2")
  full, _ = config.parse_args([], default="tnt_experiments")
  assert full.model.memory.tnt.global_lr_max == 0.002   # the main job's TNT


def test_quality_arms_reuse_the_other_experiments_runs(tmp_path):
  base, _ = config.parse_args(["--smoke", f"--config.workdir={tmp_path}"],
                              default="tnt_experiments")
  q = lambda name: tx.quality_config(base, name, 1)
  assert q("titans_C2").workdir == str(tmp_path / "time_to_target" / "titans_C2" / "seed1")
  s2 = q("tnt_CL4_stage2")
  assert s2.workdir == str(tmp_path / "chunk_sweep" / "tnt_CL4_stage2" / "seed1")
  assert s2.train.init_from == str(tmp_path / "time_to_target" / "tnt_CL4" / "seed1")
  assert s2.model.memory.tnt.local_chunk_sizes == (2,) and s2.train.steps == 2
  mem = lambda name: q(name).model.memory.tnt
  assert mem("tnt_L4").local_chunk_sizes == (1, 2, 4, 8)   # C = job.tnt_local_chunks = 4
  assert mem("tnt_no_reset").shard_length == base.data.seq_len
  assert not mem("tnt_no_global").use_global and not mem("tnt_no_qk").qk_projection
  swa = q("swa")
  assert swa.model.mixers == "swa" and swa.model.window == base.job.tnt_shard_length
  assert swa.workdir == str(tmp_path / "quality" / "swa" / "seed1")
  with pytest.raises(ValueError, match="unknown arm 'mamba'"):
    q("mamba")


def test_a_diverged_quality_arm_is_reported_not_raised(tmp_path, monkeypatch):
  def diverge(cfg):
    raise tx.resume_lib.NonFiniteError("non-finite loss", step=3, last_good=None, command="")
  monkeypatch.setattr(tx.trainer, "train", diverge)
  base, _ = config.parse_args(["--smoke", f"--config.workdir={tmp_path}"],
                              default="tnt_experiments")
  cfg = tx.quality_config(base, "tnt_no_qk", 0)
  with pytest.raises(tx.resume_lib.NonFiniteError):
    tx.run(cfg)
  r = tx.run(cfg, diverged_ok=True)
  assert r["diverged_at_step"] == 3 and r["bpb"] != r["bpb"] and r["params"] > 0
  big = tx.quality_config(base, "titans_C256", 0).model.memory.titans
  assert big.lr_max == pytest.approx(base.model.memory.titans.lr_max * 64 / 256)


def test_spread_and_format():
  s = tx.spread([3.0, None, 1.0])
  assert (s["mean"], s["min"], s["max"], s["n"], s["of"], s["nonfinite"]) == (
      2.0, 1.0, 3.0, 2, 3, 0)
  assert tx.fmt(s) == "2.0 [1.0, 3.0] (2/3 seeds)"
  assert tx.fmt(tx.spread([None, None])) == "not reached"
  assert tx.fmt(tx.spread([0.5, 1.5]), ".2f") == "1.00 [0.50, 1.50]"
  diverged = tx.spread([float("nan"), 2.0, float("inf")])
  assert (diverged["mean"], diverged["n"], diverged["nonfinite"]) == (2.0, 1, 2)
  assert tx.fmt(diverged) == "2.0 [2.0, 2.0] (1/3 seeds) (2 non-finite)"
  assert tx.fmt(tx.spread([float("nan")])) == "non-finite (1/1)"


def test_time_to_target_arithmetic(tmp_path, monkeypatch):
  """Target, steps to it, seconds at the round-robin step time, speedups and spreads from
  hand-made curves (no training)."""
  curves = {  # arm -> per seed [(step, loss)]; tokens per step = 8 * 32 in the smoke config
      "titans_C2": [[(2, 5.0), (4, 3.0)], [(2, 4.0), (4, 3.5)]],
      "tnt_CL4": [[(2, 3.5), (4, 3.0)], [(2, 6.0), (4, 5.0)]]}

  def fake_run(cfg):
    arm, seed = cfg.workdir.split("/")[-2], int(cfg.workdir[-1])
    pts = curves[arm][seed]
    return {"val_curve": [{"step": s, "loss": v, "tokens": 256 * s} for s, v in pts],
            "chunk": arm, "serial_depth": 1, "params": 1, "bpb": pts[-1][1], "loss": pts[-1][1],
            "compile_s": 0.0, "sweep_bpb": {4: pts[-1][1]}}
  monkeypatch.setattr(tx, "run", fake_run)
  monkeypatch.setattr(tx.tnt_lm, "interleaved_step_times",
                      lambda runs, rounds, steps: {"titans_C2": 2.0, "tnt_CL4": 1.0})
  base, _ = config.parse_args(["--smoke", f"--config.workdir={tmp_path}"],
                              default="tnt_experiments")
  res = tx.time_to_target(base, tmp_path)
  assert res["target_loss"] == 3.5          # max over Titans seeds of their best (3.0, 3.5)
  t, n = res["rows"]["titans_C2"], res["rows"]["tnt_CL4"]
  # Titans: seed 0 crosses 3.5 at step 2 + 2 * (5 - 3.5) / (5 - 3) = 3.5, seed 1 at step 4
  assert t["time_to_target_s"]["mean"] == pytest.approx(2.0 * (3.5 + 4) / 2)
  assert t["tokens_to_target"]["min"] == pytest.approx(256 * 3.5)
  # TNT: seed 0 at step 2 (first evaluation), seed 1 never
  assert n["time_to_target_s"] == {"mean": 2.0, "min": 2.0, "max": 2.0, "n": 1, "of": 2,
                                   "nonfinite": 0}
  # per seed: seed 0 only (seed 1 of TNT never reaches it): 7.0 s / 2.0 s
  assert n["speedup_vs_baseline"]["mean"] == pytest.approx(3.5)
  assert (n["speedup_vs_baseline"]["n"], t["speedup_vs_baseline"]["mean"]) == (1, 1.0)
  assert n["tokens_per_s"] == pytest.approx(256 / 1.0)
  assert "(1/2 seeds)" in res["table"] and (tmp_path / "curves.png").exists()


@pytest.mark.slow
def test_smoke_runs_both_experiments(tmp_path):
  # one seed and one sweep chunk keep it short; the seed statistics are tested above
  args = ["--smoke", f"--config.workdir={tmp_path}", "--config.exp.seeds=0",
          "--config.exp.sweep_chunks=4"]
  res = tx.main(["--experiment=time_to_target", *args])
  rows = res["rows"]
  assert set(rows) == {"titans_C2", "tnt_CL4"}
  assert rows["titans_C2"]["speedup_vs_baseline"]["mean"] == pytest.approx(1.0)
  # the target is the worst seed's best loss of the baseline: every baseline seed reaches it
  assert rows["titans_C2"]["time_to_target_s"]["n"] == 1
  for r in rows.values():
    assert r["bpb"]["n"] == 1 and set(r["sweep_bpb"]) == {4}
    assert r["serial_depth"] > 0 and r["step_s"] > 0
  assert (tmp_path / "time_to_target" / "curves.png").exists()
  saved = json.loads((tmp_path / "time_to_target" / "results.json").read_text())
  assert saved["target_loss"] == res["target_loss"]
  sweep = tx.main(["--experiment=chunk_sweep", *args])
  assert set(sweep["bpb"]) == {"titans_C2", "tnt_CL4", "tnt_CL4 + stage 2"}
  # stage 1 is reused, not retrained: its chunk-sweep values are time_to_target's
  assert sweep["bpb"]["tnt_CL4"]["4"]["mean"] == pytest.approx(
      rows["tnt_CL4"]["sweep_bpb"][4]["mean"], rel=1e-12)
  assert (tmp_path / "chunk_sweep" / "tnt_CL4_stage2" / "seed0" / "summary.json").exists()
  q = tx.main(["--experiment=quality", *args,
                "--config.exp.quality_arms=titans_C2,tnt_CL4_stage2,tnt_no_qk"])
  assert q["rows"]["titans_C2"]["bpb"]["mean"] == rows["titans_C2"]["bpb"]["mean"]  # reused
  stage2 = json.loads((tmp_path / "chunk_sweep" / "tnt_CL4_stage2" / "seed0" /
                       "summary.json").read_text())
  assert q["rows"]["tnt_CL4_stage2"]["bpb"]["mean"] == stage2["eval"]["bits_per_byte"]
  assert (tmp_path / "quality" / "tnt_no_qk" / "seed0" / "summary.json").exists()
  with pytest.raises(ValueError, match="experiment"):
    tx.main(["--experiment=table9", *args])
