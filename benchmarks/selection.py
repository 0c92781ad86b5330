"""Data-selection benchmarks, one per method of tnx.selection.

  python -m benchmarks.selection --method=influence [options]   # benchmarks/selection_influence
  python -m benchmarks.selection --method=xmas [options]        # benchmarks/selection_xmas

Every other argument is passed to the method's own `main(argv)`; each module is imported only
when chosen, so one method's benchmark runs without the other's code.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

METHODS = {"influence": "benchmarks.selection_influence", "xmas": "benchmarks.selection_xmas"}


def main(argv: Sequence[str] | None = None) -> Any:
  argv = list(sys.argv[1:] if argv is None else argv)
  method, rest = "influence", []
  for a in argv:
    if a.startswith("--method="):
      method = a.split("=", 1)[1]
    else:
      rest.append(a)
  if method not in METHODS:
    raise ValueError(f"--method must be one of {sorted(METHODS)}, got {method!r}")
  return importlib.import_module(METHODS[method]).main(rest)


if __name__ == "__main__":
  main()
