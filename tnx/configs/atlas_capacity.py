"""Associative-memory capacity of the ATLAS memories without outer training (docs/atlas.md).

  python -m examples.atlas_capacity              # a few minutes on 2 CPU cores
  python -m examples.atlas_capacity --smoke      # ~15 s CPU
  python -m examples.atlas_capacity --config.epochs=1000 --config.ns="(8, 45, 46)"
  python -m examples.atlas_capacity --docs       # also copy the figure into docs/

Writes <workdir>/results.json, <workdir>/results.md and <workdir>/atlas_capacity.png.
"""

from __future__ import annotations

import ml_collections as mlc


def get_config(arg: str | None = None) -> mlc.ConfigDict:
  c = mlc.ConfigDict()
  c.workdir = "runs/atlas_capacity"  # tables, results.json, the figure
  c.docs = False                  # --docs: also copy the figure into docs/
  c.ns = (4, 8, 9, 16, 32, 44, 45, 46, 56, 64, 80)  # stored pairs N of the capacity table
  c.epochs = 3000                 # passes over the N pairs
  c.tol = 1e-3                    # recall threshold (max abs error)
  c.seeds = (0, 1)                # key/value draws averaged in the capacity table
  c.window_pairs = 40             # N of the window table
  c.windows = (1, 4, 16, 40)      # Omega windows c of the window table (c = N: full batch)
  c.muon_steps = (5, 20, 100)     # full-batch steps of the GD vs Muon table
  if arg == "smoke":
    c.workdir = "runs/atlas_capacity_smoke"
    c.ns, c.epochs, c.seeds = (6,), 20, (0,)
    c.window_pairs, c.windows, c.muon_steps = 6, (1, 6), (2,)
  elif arg not in (None, ""):
    raise ValueError(f"config argument {arg!r} is unknown; expected '' or 'smoke'")
  return c
