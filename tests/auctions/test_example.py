"""The experiments example runs end to end in its smoke configuration."""

import os

from examples import auctions as example


def test_smoke_run_writes_tables_and_plots(tmp_path):
  out = tmp_path / "auctions.md"
  out.write_text("# header kept\n\n<!-- RESULTS:BEGIN -->\nSTALE-BLOCK\n"
                 "<!-- RESULTS:END -->\ntail kept\n")
  example.main(["--smoke", "--out", str(out)])
  text = out.read_text()
  assert text.startswith("# header kept") and text.endswith("tail kept\n")
  assert "STALE-BLOCK" not in text
  for section in ("E1", "E2", "E3", "E4", "Throughput"):
    assert section in text
  # Exact solvers agree and truthful mechanisms show no profitable misreport.
  assert "| 0 | 0 |" in text
  for j in (1, 2, 4):
    assert os.path.exists(tmp_path / f"auctions_e{j}.png")
