"""Metrics: step time excludes paused (eval/checkpoint) time while the wall-clock rate does
not; a resume marker drops the abandoned rows; TensorBoard tags are train/... and eval/..."""

import json

import pytest

from tnx.train import metrics


class FakeClock:
  def __init__(self):
    self.t = 100.0

  def __call__(self):
    return self.t


def test_step_clock_separates_training_from_wall_time(monkeypatch):
  fake = FakeClock()
  monkeypatch.setattr(metrics.time, "perf_counter", fake)
  clock = metrics.StepClock(tokens_per_step=1000)
  fake.t += 5.0                      # compilation and the first step
  clock.tick(1)
  assert clock.compile_s == 5.0
  for step in (2, 3):
    fake.t += 0.5
    clock.tick(step)
  with clock.paused():               # an evaluation of 3 s between steps 3 and 4
    fake.t += 3.0
  fake.t += 0.5
  clock.tick(4)
  r = clock.report()
  assert r["step_time_s"] == pytest.approx(0.5) and r["steps_per_s"] == pytest.approx(2.0)
  assert r["tokens_per_s"] == pytest.approx(2000.0)
  assert r["wall_tokens_per_s"] == pytest.approx(3 * 1000 / 4.5)
  assert "step_time_s" not in clock.report()     # nothing new since the last report
  s = clock.summary()
  assert s["steady_steps"] == 3 and s["train_step_s"] == pytest.approx(1.5)
  assert s["tokens_per_s"] == pytest.approx(2000.0)
  assert s["wall_tokens_per_s"] == pytest.approx(3000 / 4.5)


def test_read_jsonl_drops_rows_abandoned_by_a_resume(tmp_path):
  rows = [{"step": 1, "kind": "train", "loss": 5.0}, {"step": 2, "kind": "train", "loss": 4.0},
          {"step": 3, "kind": "train", "loss": 9.0}, {"step": 3, "kind": "eval", "loss": 9.5},
          {"step": 4, "kind": "train", "loss": 99.0},
          {"step": 2, "kind": "resume", "changes": {"opt.peak_lr": [1, 0.5]}},
          {"step": 3, "kind": "train", "loss": 3.0}]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  got = metrics.read_jsonl(tmp_path / "metrics.jsonl")
  assert [(r["step"], r["kind"], r.get("loss")) for r in got] == [
      (1, "train", 5.0), (2, "resume", None), (2, "train", 4.0), (3, "train", 3.0)]
  assert metrics.curves_from_rows(got) == {"train": ([1, 2, 3], [5.0, 4.0, 3.0])}


def test_tensorboard_tags_by_kind(tmp_path, tb_scalars):
  w = metrics.MetricsWriter(tmp_path, total_steps=2, progress=False)
  w.write(1, {"kind": "train", "loss": 2.0, "accuracy": 0.5, "finite": 1.0})
  w.write(1, {"kind": "eval", "loss": 2.5, "accuracy": 0.25})
  w.write(1, {"kind": "resume", "changes": {}})
  w.close()
  assert tb_scalars(tmp_path / "tb") == {"train/loss": [(1, 2.0)], "train/accuracy": [(1, 0.5)],
                                         "eval/loss": [(1, 2.5)], "eval/accuracy": [(1, 0.25)]}
  assert metrics.peak_memory_bytes() is None or metrics.peak_memory_bytes() > 0


def test_peak_memory_is_reported_where_the_backend_has_it(monkeypatch):
  """Max of the devices' peak_bytes_in_use (GPU/TPU backends report it); absent on a backend
  that returns no stats or raises (CPU)."""
  class Device:
    def __init__(self, stats):
      self.stats = stats

    def memory_stats(self):
      if isinstance(self.stats, Exception):
        raise self.stats
      return self.stats

  devices = [Device({"peak_bytes_in_use": 3 * 2**30, "bytes_in_use": 1}),
             Device({"peak_bytes_in_use": 5 * 2**29}), Device(None), Device(RuntimeError("no"))]
  monkeypatch.setattr(metrics.jax, "local_devices", lambda: devices)
  assert metrics.peak_memory_bytes() == 3 * 2**30
  clock = metrics.StepClock(tokens_per_step=10)
  clock.tick(1)
  assert clock.report()["peak_memory_gb"] == 3.0 and clock.summary()["peak_memory_gb"] == 3.0
  monkeypatch.setattr(metrics.jax, "local_devices", lambda: devices[2:])
  assert metrics.peak_memory_bytes() is None and "peak_memory_gb" not in clock.summary()
