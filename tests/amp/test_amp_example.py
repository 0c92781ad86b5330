"""The example's smoke configuration runs end to end and writes its plots."""

import os

from examples import amp_retraining


def test_smoke(tmp_path, capsys):
  amp_retraining.main(["--smoke", "--out_dir", str(tmp_path)])
  out = capsys.readouterr().out
  assert "fixed point 1.3240" in out
  for name in ("amp_se_vs_sim", "amp_cobweb", "amp_se_noise", "amp_probe_noise"):
    assert os.path.getsize(tmp_path / f"{name}.png") > 1000
