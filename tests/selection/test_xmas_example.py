"""examples.xmas smoke variant end to end, into a temporary workdir."""

import json

import numpy as np

from examples import xmas
from tnx.configs import xmas as xmas_config


def test_smoke_run_writes_results(tmp_path):
  ours = [xmas.DOCS / "selection_xmas_arp.png", xmas.DOCS / "selection_xmas_results.md"]
  stamp = lambda: [p.stat().st_mtime_ns if p.exists() else None for p in ours]
  docs_before = stamp()
  result = xmas.main(["--smoke", f"--config.workdir={tmp_path}"])
  for name in ("results.json", "results.md", "arp.png", "runs.jsonl", "values.npz"):
    assert (tmp_path / name).exists(), name
  methods = xmas_config.METHODS.split(",")
  table = result["summary"]["table"]
  assert sorted({e["method"] for e in table.values()}) == sorted(methods)
  assert all(np.isfinite(e["arp_mean"]) for e in table.values())
  runs = [json.loads(x) for x in (tmp_path / "runs.jsonl").read_text().splitlines()]
  n = result["extra"]["pool_size"]
  for r in runs:
    if r["method"] != "full":
      assert r["size"] == int(r["budget"] * n)          # every method meets the budget
  assert stamp() == docs_before          # the smoke run never writes into docs/
  again = xmas.main(["--smoke", f"--config.workdir={tmp_path}", "--resume"])  # nothing to redo
  assert again["summary"]["table"].keys() == table.keys()
