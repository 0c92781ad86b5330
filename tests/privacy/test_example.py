"""The example's smoke configuration runs end to end (keeps examples.dp_embeddings from rotting)."""

import math

from examples import dp_embeddings


def test_smoke_run():
  res = dp_embeddings.main(["--smoke", "--no_plots"])
  runs = res["digits"]["runs"].values()
  assert len(runs) == 3
  for r in runs:
    assert r["spent"] <= r["eps"] * (1 + 1e-6)
    assert 0.0 <= min(r["acc"]) <= 1.0
  assert all(math.isfinite(v["err"][0]) for v in res["gmm"]["vs_n"].values())
