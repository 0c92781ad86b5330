"""benchmarks.icl runs (smoke sizes) and reports positive rates for every variant."""

import pytest

from benchmarks import icl


@pytest.mark.slow
def test_benchmark_smoke():
  cot_rows, gpt_rows = icl.main(["--smoke"])
  assert len(cot_rows) == 1 and all(v > 0 for v in cot_rows[0][4:])
  assert len(gpt_rows) == 1 and gpt_rows[0][-2] > 0
