"""Optimal retraining with noisy labels: state evolution, AMP simulation, linear probes
(docs/amp.md).

  python -m examples.amp_retraining              # a few minutes on 2 CPU cores
  python -m examples.amp_retraining --smoke      # ~20 s CPU
  python -m examples.amp_retraining --config.noise="(0.2, 0.4)" --config.probe_seeds=5
  python -m examples.amp_retraining --docs       # also copy the figures into docs/

Writes <workdir>/results.json and <workdir>/amp_{se_vs_sim,cobweb,se_noise,probe_noise}.png.
"""

from __future__ import annotations

import ml_collections as mlc


def get_config(arg: str | None = None) -> mlc.ConfigDict:
  c = mlc.ConfigDict()
  c.workdir = "runs/amp_retraining"  # figures and results.json
  c.docs = False                  # --docs: also copy the figures into docs/
  c.smoke = False                 # smaller aggregator set and data sets in the probe section
  c.n = 4000                      # AMP simulation samples (d = n / alpha)
  c.sim_seeds = 8                 # AMP simulation seeds
  c.probe_seeds = 20              # seeds per probe experiment
  c.probe_rounds = 3              # retraining rounds of the probe
  c.noise = (0.1, 0.2, 0.3, 0.4, 0.45)  # label-noise levels p
  if arg == "smoke":
    c.workdir, c.smoke = "runs/amp_retraining_smoke", True
    c.n, c.sim_seeds, c.probe_seeds, c.probe_rounds = 200, 2, 2, 1
    c.noise = (0.4,)
  elif arg not in (None, ""):
    raise ValueError(f"config argument {arg!r} is unknown; expected '' or 'smoke'")
  return c
