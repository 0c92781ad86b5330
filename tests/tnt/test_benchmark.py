"""The TNT benchmark's smoke configuration runs and prints every row."""

from benchmarks import tnt as bench


def test_smoke_prints_table():
  table = bench.main(["--smoke"])
  lines = table.splitlines()
  assert lines[0].startswith("| L | model")
  assert [line.split("|")[2].strip() for line in lines[2:]] == ["Titans C=8", "TNT C_L={8}",
                                                                 "Attention"]
  # Titans at C=8 is its own baseline.
  assert lines[2].rstrip(" |").endswith("| 1")
  assert float(lines[4].split("|")[6]) > 0      # planned peak MB


def test_rows_over_the_memory_limit_are_not_run():
  args = bench.parse(["--smoke", "--max_gb", "1e-9"])
  sec, count, peak = bench.step_time(bench._attention(args), args, 64)
  assert sec is None and count > 0 and peak > 1e-9 * 2**30
