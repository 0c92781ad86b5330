"""Resume safety: the whole config is compared, changes are refused (listed) or recorded with
--allow_changes, --resume_step restarts from an older step exactly, and a non-finite step stops
naming the last good checkpoint and a resume command that then trains without NaN."""

import shlex
import sys

import numpy as np
import pytest

from tnx.train import __main__ as train_main
from tnx.train import config, metrics, resume, trainer
from tnx.train.checkpoint import Checkpointer


def test_config_changes_and_message():
  saved = {"workdir": "a", "opt": {"peak_lr": 0.003, "b1": 0.9}, "train": {"resume": False,
                                                                       "steps": 10}}
  current = {"workdir": "b", "opt": {"peak_lr": 0.001, "b1": 0.9}, "train": {"resume": True,
                                                                         "steps": 10},
             "data": {"new": 1}}
  changes = resume.config_changes(saved, current)
  assert changes == {"data.new": (resume.ABSENT, 1), "opt.peak_lr": (0.003, 0.001)}
  with pytest.raises(ValueError, match=r"in 2 key\(s\):\n  data.new: '<absent>' -> 1\n"
                                       r"  opt.peak_lr: 0.003 -> 0.001\n.*--allow_changes"):
    resume.check_config(saved, current, allow=False, where="DIR")
  assert resume.check_config(saved, current, allow=True, where="DIR") == changes
  # an example's own sections (which runs a job makes) are not the run's config
  assert resume.config_changes(dict(saved, job={"models": "a,b"}, docs=False),
                               dict(saved, job={"models": "a", "seeds": "0"})) == {}
  assert resume.config_changes({"seed": 0}, {"seed": 1}) == {"seed": (0, 1)}


def test_resume_command_replaces_earlier_resume_flags():
  argv = ["python", "-m", "tnx.train", "--config=lm", "--config.workdir=w", "--resume",
          "--resume_step", "8", "--config.opt.peak_lr=0.01", "--allow_changes"]
  assert resume.resume_command(argv=argv) == (
      "python -m tnx.train --config=lm --config.workdir=w --config.opt.peak_lr=0.01 --resume")
  assert resume.resume_command(step=4, peak_lr=0.005, argv=argv) == (
      "python -m tnx.train --config=lm --config.workdir=w --resume --resume_step=4 "
      "--allow_changes --config.opt.peak_lr=0.005")
  assert resume.resume_command(argv=["pytest", "-x"]) == (
      "the command that started this run, with --resume added")


def test_changed_config_is_refused(tmp_path, smoke):
  """Changes of the data, optimizer or step count are refused with every changed key listed
  (accepting them with --allow_changes, recorded in metrics.jsonl: test_paths.py)."""
  common = ["--config.train.steps=2", "--config.train.ckpt_every=2"]
  first = trainer.train(smoke(tmp_path, *common))
  # resuming a finished run only evaluates it, and keeps the rates of the run that trained
  again = trainer.train(smoke(tmp_path, *common, "--config.train.resume=true"))
  assert again["start_step"] == 2 and again["tokens_per_s"] == first["tokens_per_s"]
  with pytest.raises(ValueError, match=r"in 3 key\(s\):\n  data.seq_len: 32 -> 16\n"
                                       r"  opt.peak_lr: 0.003 -> 0.001\n  train.steps: 2 -> 6\n"):
    trainer.train(smoke(tmp_path, *common, "--config.train.resume=true",
                        "--config.opt.peak_lr=0.001", "--config.train.steps=6",
                        "--config.data.seq_len=16"))
  assert Checkpointer(tmp_path / "checkpoints").all_steps() == [2]


@pytest.mark.slow
def test_resume_step_restarts_from_an_older_checkpoint_exactly(tmp_path, smoke, light):
  common = ["--config.train.steps=8", "--config.train.ckpt_every=2", "--config.train.keep_last=4",
            "--config.train.eval_every=0", "--config.train.log_every=1"]
  ref = dict(trainer.train(smoke(tmp_path, *common))["train_losses"])
  assert Checkpointer(tmp_path / "checkpoints").all_steps() == [2, 4, 6, 8]
  cfg, resumed_flag = config.parse_args(["--config=lm:smoke", f"--config.workdir={tmp_path}",
                                         "--resume_step=4", "--config.train.progress=false",
                                         "--config.train.plot=false",
                                         *light, *common])
  assert resumed_flag and cfg.train.resume and cfg.train.resume_step == 4
  again = dict(trainer.train(cfg)["train_losses"])
  assert again == ref                     # steps 5..8 recomputed bit for bit
  ck = Checkpointer(tmp_path / "checkpoints")
  assert ck.all_steps() == [2, 4, 6, 8]   # the abandoned 6, 8 were replaced by the new ones


NAN_ARGS = ["--config.opt.peak_lr=1e8", "--config.opt.clip=0", "--config.opt.warmup_steps=100",
            "--config.opt.weight_decay=0", "--config.train.steps=10",
            "--config.train.ckpt_every=2", "--config.train.keep_last=1",
            "--config.train.nan_lr_scale=0.1", "--config.train.eval_every=0",
            "--config.train.log_every=1"]


def test_nan_stops_with_last_good_checkpoint_and_a_working_resume_command(tmp_path, smoke, light,
                                                                          monkeypatch):
  """lr ramping to 1e8: step 7 is not finite. Checkpoint 6 (from which step 7 ran) is marked
  bad, checkpoint 4 (confirmed by a finite step 5) is the last good one and survives keep-last-1
  retention; the printed command resumes from 4 with lr x0.1 and trains to the end."""
  cfg = smoke(tmp_path, *NAN_ARGS)
  argv = ["python", "-m", "tnx.train", "--config=lm:smoke", f"--config.workdir={tmp_path}",
          "--config.train.progress=false", "--config.train.plot=false",
          *light, *NAN_ARGS]
  monkeypatch.setattr(sys, "orig_argv", argv)
  with pytest.raises(FloatingPointError) as info:
    trainer.train(cfg)
  err = info.value
  assert isinstance(err, resume.NonFiniteError) and err.step == 7 and err.last_good == 4
  assert f"at step 7; the update was skipped and nothing was saved. The last good checkpoint is " \
         f"step 4 in {tmp_path}/checkpoints" in str(err)
  ck = Checkpointer(tmp_path / "checkpoints")
  assert ck.describe() == "4 (good), 6 (bad: step 7, computed from it, was not finite)"
  ck.close()
  cmd = shlex.split(err.resume_command)
  assert cmd[:3] == ["python", "-m", "tnx.train"] and cmd[-4:] == [
      "--resume", "--resume_step=4", "--allow_changes", "--config.opt.peak_lr=1e+07"]
  monkeypatch.setattr(sys, "orig_argv", cmd)
  train_main.main(cmd[3:])                # the printed command, as typed
  rows = [r for r in metrics.read_jsonl(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
  assert [r["step"] for r in rows] == list(range(1, 11))
  assert all(np.isfinite(r["loss"]) and r["finite"] == 1 for r in rows)
  # warmup is capped at train.steps = 10: step 5 runs at lr = 1e7 * 4 / 10 (the new peak)
  assert rows[4]["lr"] == pytest.approx(1e7 * 4 / 10)
  assert Checkpointer(tmp_path / "checkpoints").latest_step() == 10


def test_nan_without_any_good_checkpoint_suggests_a_new_workdir(monkeypatch):
  monkeypatch.setattr(sys, "orig_argv", ["python", "-m", "tnx.train", "--config.workdir=runs/a",
                                         "--config.opt.peak_lr=0.01", "--config.train.steps=4"])
  err = resume.nonfinite_error(step=2, loss=float("nan"), grad_norm=float("inf"),
                               directory="runs/a/checkpoints", last_good=None, peak_lr=0.01,
                               lr_scale=0.5, workdir="runs/a")
  assert isinstance(err, FloatingPointError) and err.step == 2 and err.last_good is None
  assert err.resume_command == ("python -m tnx.train --config.train.steps=4 "
                                "--config.opt.peak_lr=0.005 --config.workdir=runs/a_lr0.005")
  assert str(err).startswith("non-finite loss (nan) or gradient norm (inf) at step 2; the "
                             "update was skipped and nothing was saved. No checkpoint of this "
                             "run is confirmed good yet")
