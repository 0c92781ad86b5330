"""examples.atlas_capacity --smoke: N = 6 pairs fit a linear memory over d_k = 8 exactly (least
squares) and the per-token Omega rule with window 1 (Kaczmarz) recalls all of them; tables,
results.json and the figure go to the run directory."""

import json

import numpy as np
import pytest

from examples import atlas_capacity as example


def _published(docs):
  """The bytes of the docs/ files this example writes with --docs (None if absent)."""
  names = ["atlas_capacity.png"]
  return {n: (docs / n).read_bytes() if (docs / n).exists() else None for n in names}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("atlas")
  published = _published(example.DOCS)   # what --docs would overwrite
  res = example.main(["--smoke", f"--config.workdir={tmp}"])
  assert _published(example.DOCS) == published
  return res, tmp


def test_capacity_numbers(run):
  res, _ = run
  cap = res["capacity"]
  assert res["ns"] == [6] and sorted(cap) == ["linear", "linear+phi2", "mlp", "mlp+phi2"]
  assert cap["linear"]["exact_lstsq"] == [6.0] and cap["linear+phi2"]["exact_lstsq"] == [6.0]
  assert cap["mlp"]["exact_lstsq"] == [None]
  assert all(0 <= r <= 6 for c in cap.values() for r in c["recalled"])
  assert res["windows"]["1"]["recalled"] == 6 and res["windows"]["1"]["median_error"] < 1e-3
  assert res["windows"]["6"]["recalled"] <= 6
  assert all(np.isfinite(res["muon"][k][0]) and res["muon"][k][0] > 0 for k in ("gd", "muon"))


def test_outputs(run):
  res, tmp = run
  assert json.loads((tmp / "results.json").read_text())["windows"] == res["windows"]
  md = (tmp / "results.md").read_text().splitlines()
  assert md[3] == f"| linear | {res['capacity']['linear']['recalled'][0]:g} [6] |"
  assert (tmp / "atlas_capacity.png").read_bytes()[:4] == b"\x89PNG"


def test_help(capsys):
  with pytest.raises(SystemExit) as e:
    example.main(["--help"])
  assert e.value.code == 0 and "  epochs = 3000" in capsys.readouterr().out
