"""examples.dp_embeddings --smoke: every DP release spends (at most, and nearly all of) its
budget, probes on synthetic embeddings beat chance, the DP mixture recovers the means less
exactly than the non-private one; outputs go to the run directory."""

import json
import math

import pytest

from examples import dp_embeddings as example


def _published(docs):
  """The bytes of the docs/ files this example writes with --docs (None if absent)."""
  names = list(example.FIGURES)
  return {n: (docs / n).read_bytes() if (docs / n).exists() else None for n in names}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("dp")
  published = _published(example.DOCS)   # what --docs would overwrite
  res = example.main(["--smoke", f"--config.workdir={tmp}"])
  assert _published(example.DOCS) == published
  return res, tmp


def test_budgets_accuracy_and_recovery(run):
  res, _ = run
  d = res["digits"]
  assert (d["n_public"], d["n_private"], d["n_test"]) == (539, 1006, 252)
  runs = list(d["runs"].values())
  assert sorted(r["method"] for r in runs) == [
      "DP Lloyd, public init (K=3)", "LSH coreset (K=3)", "prototype (K=1)"]
  for r in runs:
    assert r["eps"] == 2.0 and 0.99 * r["eps"] <= r["spent"] <= r["eps"] * (1 + 1e-6)
    assert len(r["acc"]) == 1 and 0.2 < r["acc"][0] <= 1.0      # 10 classes: chance is 0.1
  assert 0.2 < d["real"][0] <= 1.0
  g = res["gmm"]["vs_n"]
  private, exact = g["2000|1.0"]["err"][0], g["2000|inf"]["err"][0]
  assert 0 < exact < private < 0.5 and math.isfinite(private)


def test_outputs(run):
  res, tmp = run
  saved = json.loads((tmp / "results.json").read_text())
  assert saved["digits"]["runs"].keys() == res["digits"]["runs"].keys()
  for f in example.FIGURES:
    assert (tmp / f).read_bytes()[:4] == b"\x89PNG"


def test_help(capsys):
  with pytest.raises(SystemExit) as e:
    example.main(["--help"])
  assert e.value.code == 0 and "  eps = '0.5,1,2,4,8,inf'" in capsys.readouterr().out
