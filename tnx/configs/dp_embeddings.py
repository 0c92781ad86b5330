"""DP synthetic embeddings: probe accuracy against epsilon on digits, DP mean recovery on
synthetic Gaussian mixtures (docs/privacy.md).

  python -m examples.dp_embeddings               # a few minutes on 2 CPU cores
  python -m examples.dp_embeddings --smoke       # ~45 s CPU
  python -m examples.dp_embeddings --config.seeds=5 --config.eps=1,4,inf
  python -m examples.dp_embeddings --docs        # also copy the figures into docs/

Writes <workdir>/results.json, privacy_digits_accuracy.png and privacy_gmm_recovery.png.
In `eps`, `inf` is the non-private reference.
"""

from __future__ import annotations

import ml_collections as mlc


def get_config(arg: str | None = None) -> mlc.ConfigDict:
  c = mlc.ConfigDict()
  c.workdir = "runs/dp_embeddings"  # figures and results.json
  c.docs = False                  # --docs: also copy the figures into docs/
  c.plots = True                  # write the figures
  c.eps = "0.5,1,2,4,8,inf"       # privacy budgets of the digits runs (comma list)
  c.delta = 1e-5
  c.seeds = 3                     # seeds per digits cell
  c.dim = 16                      # encoder output dimension D
  c.k = 3                         # components per class (multi-component runs)
  c.lsh_depth = 8                 # LSH tree depth for digits (n ~ 100 per class)
  c.probe_epochs = 50             # probe training epochs (Adam, early stopping)
  c.encoder_epochs = 200          # public encoder training epochs
  c.gmm_n = (1000, 3000, 10000, 30000, 100000)  # sample sizes of the recovery-vs-n runs
  c.gmm_eps = (0.5, 1.0, 2.0, 4.0, 8.0)         # budgets of the recovery-vs-epsilon runs
  c.gmm_n_fixed = 10000           # n of the recovery-vs-epsilon runs
  c.gmm_seeds = 3
  c.gmm = mlc.ConfigDict(dict(k=4, dim=8, gap=0.8, std=0.05))  # the synthetic mixture
  if arg == "smoke":
    c.workdir = "runs/dp_embeddings_smoke"
    c.eps, c.seeds, c.probe_epochs, c.encoder_epochs = "2", 1, 3, 5
    c.gmm_n, c.gmm_eps, c.gmm_n_fixed, c.gmm_seeds = (2000,), (1.0,), 2000, 1
  elif arg not in (None, ""):
    raise ValueError(f"config argument {arg!r} is unknown; expected '' or 'smoke'")
  return c
