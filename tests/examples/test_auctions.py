"""examples.auctions --smoke: exact solvers agree, heuristics never beat the optimum, VCG's
welfare bounds every mechanism's, truthful mechanisms show no profitable misreport; outputs go
to the run directory, docs/ changes only with --docs."""

import json

import pytest

from examples import auctions as example

TOL = 1e-9


def _published(docs):
  """The bytes of the docs/ files this example writes with --docs (None if absent)."""
  names = ["auctions.md", "auctions_e1.png", "auctions_e2.png", "auctions_e4.png"]
  return {n: (docs / n).read_bytes() if (docs / n).exists() else None for n in names}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("auctions")
  docs = tmp / "docs"
  docs.mkdir()
  (docs / "auctions.md").write_text("# header kept\n\n<!-- RESULTS:BEGIN -->\nSTALE\n"
                                    "<!-- RESULTS:END -->\ntail kept\n")
  published = _published(example.DOCS)   # what --docs would overwrite
  mp = pytest.MonkeyPatch()
  mp.setattr(example, "DOCS", docs)
  res = example.main(["--smoke", f"--config.workdir={tmp / 'run'}", "--docs"])
  mp.undo()
  assert _published(example.DOCS) == published
  return res, tmp


def test_numbers(run):
  res, tmp = run
  assert json.loads((tmp / "run" / "results.json").read_text()) == json.loads(json.dumps(res))
  assert sorted(res["e1"]) == ["0.0", "1.0"]
  for cell in res["e1"].values():
    assert cell["solver_max_abs_diff"] <= TOL    # enumeration = Dinkelbach = bisection
    for name in ("separable_ratio", "additive_ratio"):
      assert 0.5 < cell[name]["p5"] <= 1 + TOL and 0.5 < cell[name]["mean"] <= 1 + TOL
  assert res["e1_host_max_abs_diff"] <= TOL      # HiGHS LP and scipy assignment agree
  for prior in ("uniform", "exponential", "bimodal"):
    cells = {k.split("|")[1]: v for k, v in res["e2"].items() if k.startswith(prior + "|")}
    assert len(cells) == 3
    assert all(cells["VCG"]["welfare"] >= c["welfare"] - TOL for c in cells.values())
  assert len(res["e3"]) == 5
  for cell in res["e3"].values():
    assert cell["gains_above_1e-9"] == 0 and cell["ir_violations"] == 0
    assert cell["max_utility_gain"] <= TOL and cell["misreports"] == 200
  assert res["e4"]["C1 click-and-leave|dp"] == {"mean": 1.0, "p5": 1.0, "min": 1.0}
  assert all(0 < v["min"] <= v["p5"] <= 1 + TOL and v["mean"] <= 1 + TOL
             for v in res["e4"].values())


def test_outputs_in_the_run_directory_and_docs_only_with_flag(run):
  _, tmp = run
  out = (tmp / "run" / "auctions.md").read_text()
  assert out.count(example.BEGIN) == 1 and "### E4: cascade" in out
  for j in (1, 2, 4):
    assert (tmp / "run" / f"auctions_e{j}.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp / "docs" / f"auctions_e{j}.png").exists()
  doc = (tmp / "docs" / "auctions.md").read_text()
  assert doc.startswith("# header kept\n\n<!-- RESULTS:BEGIN -->\n") and doc.endswith(
      "<!-- RESULTS:END -->\ntail kept\n")
  assert "STALE" not in doc
  block = out.split(example.BEGIN + "\n")[1].split("\n" + example.END)[0]
  assert doc.split(example.BEGIN + "\n")[1].split("\n" + example.END)[0] == block


def test_help(capsys):
  with pytest.raises(SystemExit) as e:
    example.main(["--help"])
  out = capsys.readouterr().out
  assert e.value.code == 0 and "[--docs]" in out and "  instances = 10000" in out
  assert "Position auctions in AI-generated content" in out
