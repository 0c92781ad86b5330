"""Every path in tnx.train goes through etils.epath: local paths, file:// URLs, and a gs://
workdir (served by a local stand-in) for checkpoints, metrics, TensorBoard, plots, summary."""

import json
import os

import pytest

from tnx.train import metrics, paths, trainer


def test_local_paths_and_urls(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert str(paths.path("runs/a")) == str(tmp_path / "runs" / "a")
  assert str(paths.path(f"file://{tmp_path}/b%20c")) == str(tmp_path / "b c")
  assert str(paths.path("gs://bucket/runs/x") / "checkpoints") == "gs://bucket/runs/x/checkpoints"
  assert paths.is_local("runs/a") and not paths.is_local("gs://bucket/x")
  with pytest.raises(ValueError, match="ftp:// is not supported"):
    paths.path("ftp://host/x")
  with pytest.raises(ValueError, match="non-empty"):
    paths.path("")


def test_small_writers(tmp_path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  paths.write_text(tmp_path / "a" / "b.txt", "hello")
  assert (tmp_path / "a" / "b.txt").read_text() == "hello"
  fig, ax = plt.subplots()
  ax.plot([0, 1], [1, 0])
  paths.save_figure(fig, tmp_path / "f.png")
  assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  copied = paths.copy_into([tmp_path / "f.png", tmp_path / "a" / "b.txt"], tmp_path / "docs")
  assert [p.name for p in copied] == ["f.png", "b.txt"]
  assert (tmp_path / "docs" / "b.txt").read_text() == "hello"


def test_metrics_writer_on_a_cloud_url_rewrites_whole_objects(gcs, tb_scalars):
  root, cwd = gcs
  w = metrics.MetricsWriter("gs://bucket/m", total_steps=3, progress=False, flush_s=0.0)
  w.write(1, {"kind": "train", "loss": 2.0})
  w.write(1, {"kind": "eval", "loss": 3.0})
  assert len((root / "bucket" / "m" / "metrics.jsonl").read_text().splitlines()) == 2
  w.close()
  w = metrics.MetricsWriter("gs://bucket/m", total_steps=3, start_step=1, progress=False)
  w.write(2, {"kind": "train", "loss": 1.5})   # continues the existing object
  w.close()
  rows = metrics.read_jsonl("gs://bucket/m/metrics.jsonl")
  assert [(r["step"], r["kind"], r["loss"]) for r in rows] == [
      (1, "eval", 3.0), (1, "train", 2.0), (2, "train", 1.5)]
  tags = tb_scalars(root / "bucket" / "m" / "tb")
  assert tags["train/loss"] == [(1, 2.0), (2, 1.5)] and tags["eval/loss"] == [(1, 3.0)]
  assert os.listdir(cwd) == []


def test_training_on_gs_workdir_writes_everything_through_epath(gcs, smoke, tb_scalars):
  """A run and its resume with --config.workdir=gs://bucket/run: every artifact lands in the
  stand-in bucket, nothing under the current directory (the old './gs:/bucket' bug)."""
  root, cwd = gcs
  common = ["--config.train.ckpt_every=2", "--config.train.plot=true",
            "--config.train.eval_every=0", "--config.train.eval_batches=1",
            "--config.train.log_every=1"]
  first = trainer.train(smoke("gs://bucket/run", "--config.train.steps=4", *common))
  resumed = trainer.train(smoke("gs://bucket/run", "--config.train.steps=6", *common,
                                    "--config.train.resume=true",
                                    "--config.train.allow_changes=true"))
  run = root / "bucket" / "run"
  assert os.listdir(cwd) == []
  assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["4", "6", "status.json"]
  assert (run / "loss.png").read_bytes()[:4] == b"\x89PNG"
  summary = json.loads((run / "summary.json").read_text())
  assert [s for s, _ in summary["train_losses"]] == [1, 2, 3, 4, 5, 6]
  assert summary["eval_s"] > 0      # the final evaluation, timed apart
  assert resumed["train_losses"][:4] == first["train_losses"]
  tags = tb_scalars(run / "tb")
  assert [s for s, _ in tags["train/loss"]] == [1, 2, 3, 4, 5, 6]
  assert [s for s, _ in tags["eval/loss"]] == [4, 6]
  rows = metrics.read_jsonl(run / "metrics.jsonl")
  assert [r["changes"] for r in rows if r["kind"] == "resume"] == [{"train.steps": [4, 6]}]


def test_unsupported_url_is_refused_before_anything_is_written(tmp_path, monkeypatch, smoke):
  """A scheme etils.epath has no backend for (memory://, ftp://) is an error naming workdir;
  it never becomes a local folder such as './memory:/run'."""
  from tnx.train import config
  monkeypatch.chdir(tmp_path)
  for url in ("memory://bucket/run", "ftp://host/run"):
    cfg = smoke(url)
    with pytest.raises(ValueError, match=rf"workdir='{url}': path '{url}': the URL scheme "
                                         r"\w+:// is not supported"):
      config.validate(cfg)
    with pytest.raises(ValueError, match="is not supported"):
      trainer.train(cfg)
  assert os.listdir(tmp_path) == []
