"""The TNT benchmark's smoke configuration runs and prints every row."""

from benchmarks import tnt as bench


def test_smoke_prints_table():
  table = bench.main(["--smoke"])
  lines = table.splitlines()
  assert lines[0].startswith("| L | model")
  assert [line.split("|")[2].strip() for line in lines[2:]] == ["Titans C=8", "TNT C_L={8}"]
  # Titans at C=8 is its own baseline.
  assert lines[2].rstrip(" |").endswith("| 1")
