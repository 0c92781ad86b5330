"""Position auctions in AI-generated content: experiments E1-E4 (docs/auctions.md).

  python -m examples.auctions                      # 10^4 instances per experiment cell
  python -m examples.auctions --smoke              # ~35 s CPU
  python -m examples.auctions --config.instances=2000 --config.workdir=runs/auctions_2k
  python -m examples.auctions --docs               # also update docs/auctions.md and its plots

Writes <workdir>/auctions.md (the results block), <workdir>/results.json and
<workdir>/auctions_e{1,2,4}.png. Sizes (n advertisers, m slots, k shown) are small so that
enumeration is the ground truth.
"""

from __future__ import annotations

import ml_collections as mlc


def get_config(arg: str | None = None) -> mlc.ConfigDict:
  c = mlc.ConfigDict()
  c.seed = 0
  c.workdir = "runs/auctions"     # outputs (results block, plots, results.json)
  c.docs = False                  # --docs: also write docs/auctions.md's block and plots
  c.instances = 10_000            # instances per experiment cell
  c.n, c.m, c.k = 6, 4, 3         # small size: enumeration is the ground truth
  c.medium = (20, 8, 4)           # medium size: matching solvers only
  c.medium_instances = 10_000     # 0 skips the medium size
  c.s_values = (0.0, 0.5, 1.0, 2.0)  # CTR non-separability s
  c.host_instances = 200          # instances for the host (scipy) solvers
  c.ic_instances = 1000           # instances for the misreport checks ...
  c.misreports = 10               # ... times this many misreports
  c.grid_points = 25              # bid grid of the monotonicity check
  c.cascade_delta = 0.8           # attention decay of variant C3
  if arg == "smoke":
    c.workdir = "runs/auctions_smoke"
    c.instances, c.medium_instances, c.s_values = 100, 0, (0.0, 1.0)
    c.host_instances, c.ic_instances, c.misreports = 5, 100, 2
  elif arg not in (None, ""):
    raise ValueError(f"config argument {arg!r} is unknown; expected '' or 'smoke'")
  return c
