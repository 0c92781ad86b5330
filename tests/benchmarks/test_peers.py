"""The side-by-side benchmark's smoke configuration times tnx's layers and records them."""

import json
import math

from benchmarks import peers


def test_smoke_rows_are_timed_and_written(tmp_path):
  out = tmp_path / "peers.json"
  records = peers.main(["--smoke", "--rows", "3", "--out", str(out)])  # one row: the wiring
  assert [r["layer"] for r in records] == [peers.ROWS[3][0]]
  for r in records:
    assert len(r["tnx"]) == 1 and math.isfinite(r["tnx"][0]) and r["tnx"][0] > 0
    assert r["peer"] == []                         # no peer asked for: none timed
  saved = json.loads(out.read_text())
  assert saved["rows"] == records and saved["matmul_flops"] > 0


def test_missing_ttt_checkout_is_a_clear_error(tmp_path):
  import pytest
  with pytest.raises(ValueError, match="ttt_lm_jax"):
    peers.load_ttt_lm_jax(str(tmp_path))


def test_data_parallel_rows_time_both_placements(tmp_path):
  """--cpu_devices N (here the 8 devices this process already has) spreads the batch and
  also times tnx on one device; a finite speed-up per repetition is recorded."""
  import jax
  n = len(jax.devices("cpu"))
  records = peers.main(["--smoke", "--rows", "3", "--cpu_devices", str(n), "--batch", str(n),
                        "--out", str(tmp_path / "peers.json")])
  (r,) = records
  assert len(r["tnx"]) == len(r["tnx_one_device"]) == 1
  assert all(math.isfinite(v) and v > 0 for v in r["tnx"] + r["tnx_one_device"])
