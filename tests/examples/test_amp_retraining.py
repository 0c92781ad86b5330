"""examples.amp_retraining --smoke: state evolution matches the AMP simulation within its Monte
Carlo error, Bayes-optimal retraining converges to its fixed point and has the lowest SE error;
figures and results.json go to the run directory, docs/ only with --docs."""

import json

import numpy as np
import pytest

from examples import amp_retraining as example


def _published(docs):
  """The bytes of the docs/ files this example writes with --docs (None if absent)."""
  names = [f"{n}.png" for n in ("amp_se_vs_sim", "amp_cobweb", "amp_se_noise", "amp_probe_noise")]
  return {n: (docs / n).read_bytes() if (docs / n).exists() else None for n in names}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("amp")
  published = _published(example.DOCS)   # what --docs would overwrite
  res = example.main(["--smoke", f"--config.workdir={tmp}"])
  assert _published(example.DOCS) == published
  return res, tmp


def test_state_evolution_matches_simulation(run):
  res, _ = run
  assert sorted(res["se_vs_sim"]) == ["bayes", "consensus", "hard"]
  for name, r in res["se_vs_sim"].items():
    se, sim, sd = (np.asarray(r[k]) for k in ("eta_se", "eta_sim_mean", "eta_sim_sd"))
    # Monte Carlo error of the mean over seeds, plus finite-size bias at n = 200
    np.testing.assert_array_less(np.abs(se - sim), 3 * sd / np.sqrt(r["seeds"]) + 0.05,
                                 err_msg=name)
    assert np.all(np.diff(se) > -1e-6)           # SE is non-decreasing in the round


def test_bayes_retraining_fixed_point_and_noise_sweep(run):
  res, _ = run
  c = res["cobweb"]
  assert c["fixed_point"] > c["plain_eta"] and c["error_fixed_point"] < c["error_plain"]
  for start, traj in c["trajectories"].items():
    assert abs(traj[-1] - c["fixed_point"]) < 1e-4, start
  noise = res["se_noise"]
  assert noise["noise"] == [0.4]
  for name in ("plain", "hard", "consensus", "soft_self"):
    assert noise["bayes"][0] <= noise[name][0] + 1e-6, name
  (probe,) = res["probe"].values()
  accs = [v["mean"] for row in probe.values() for v in row.values()]
  assert sorted(probe) == ["0.4"] and len(accs) == 2 and all(0.5 <= a <= 1 for a in accs)


def test_outputs(run):
  res, tmp = run
  assert json.loads((tmp / "results.json").read_text()) == json.loads(json.dumps(res))
  for name in ("amp_se_vs_sim", "amp_cobweb", "amp_se_noise", "amp_probe_noise"):
    assert (tmp / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_help(capsys):
  with pytest.raises(SystemExit) as e:
    example.main(["--help"])
  out = capsys.readouterr().out
  assert e.value.code == 0 and "  noise = (0.1, 0.2, 0.3, 0.4, 0.45)" in out and "[--docs]" in out
