"""The capacity example's smoke configuration runs (so the example cannot rot)."""

from examples import atlas_capacity


def test_capacity_smoke(capsys):
  atlas_capacity.main(["--smoke", "--plot", ""])
  out = capsys.readouterr().out
  assert "linear+phi2" in out and "muon" in out
