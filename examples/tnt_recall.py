"""Recall (MQAR, needle) of TNT, its ablations and the baselines at equal parameter count:
the MQAR and needle columns of the TNT quality experiment (docs/tnt.md), run by the harness
of examples.atlas_recall with the models and TNT scale of tnx/configs/tnt_recall.py.

  python -m examples.tnt_recall            # the job
  python -m examples.tnt_recall --smoke    # the wiring end to end
  python -m examples.tnt_recall --docs     # also copy tnt_recall.png into docs/

Writes under config.workdir: seed<s>/<model>/<task> run directories, results.json,
results.md and tnt_recall.png.
"""

from __future__ import annotations

import sys
from typing import Any

from examples import atlas_recall


def main(argv: list[str] | None = None) -> dict[str, Any]:
  return atlas_recall.main(sys.argv[1:] if argv is None else argv, default="tnt_recall")


if __name__ == "__main__":
  main()
