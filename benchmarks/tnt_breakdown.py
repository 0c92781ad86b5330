"""Where a TNT step's time goes: TNT with one piece switched off at a time, against Titans,
at one sequence length, in one process.

    python -m benchmarks.tnt_breakdown --length 8192 --chunk 64 --rounds 5
    python -m benchmarks.tnt_breakdown --smoke

Every variant is the `benchmarks.tnt` stack (same flags for width, heads, layers, batch,
global chunk and shard length) compiled once, then timed in `--rounds` interleaved rounds (one
step of each variant per round, so machine drift hits all alike); the table gives the median
step and Titans C = `--baseline_chunk` time over the variant's. Variants: Titans at the
baseline chunk and at `--chunk`, TNT {`--chunk`}, TNT without the global memory
(`use_global=False`), without the Q-K projection (`qk_projection=False`), and with one global
chunk over the whole sequence (C_G = L). A switched-off piece's cost is the difference of
step times; the variants without a piece are not the paper's model.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

from benchmarks import common
from benchmarks import tnt as bench


def variants(args) -> dict:
  """Name -> layer factory, the baseline first."""
  length, c = args.length, args.chunk
  return {
      f"Titans C={args.baseline_chunk}": bench._titans(args, args.baseline_chunk),
      f"Titans C={c}": bench._titans(args, c),
      f"TNT {{{c}}}": bench._tnt(args, c, length),
      f"TNT {{{c}}} without global memory": bench._tnt(args, c, length, use_global=False),
      f"TNT {{{c}}} without Q-K projection": bench._tnt(args, c, length, qk_projection=False),
      f"TNT {{{c}}}, C_G = L": bench._tnt(args, c, length, global_chunk_size=length),
  }


def run(args) -> str:
  steps = {}
  for name, make in variants(args).items():
    compiled, params, x, _, _ = bench.compile_step(make, args, args.length)
    common.block(compiled(params, x))  # warm-up
    steps[name] = (compiled, params, x)
  times = {name: [] for name in steps}
  for _ in range(args.rounds):
    for name, (compiled, params, x) in steps.items():
      start = time.perf_counter()
      common.block(compiled(params, x))
      times[name].append(time.perf_counter() - start)
  medians = {name: statistics.median(ts) for name, ts in times.items()}
  base = next(iter(medians.values()))
  rows = [[name, sec * 1e3, base / sec] for name, sec in medians.items()]
  return common.print_table(
      ["variant", "step ms (median)", f"Titans C={args.baseline_chunk} / variant"], rows)


def parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--smoke", action="store_true", help="tiny sizes that run in seconds")
  p.add_argument("--length", type=int, default=8192)
  p.add_argument("--chunk", type=int, default=64, help="TNT's local chunk C_L")
  p.add_argument("--baseline_chunk", type=int, default=8, help="Titans baseline chunk")
  p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
  args = p.parse_args(argv)
  if args.rounds < 1:
    raise ValueError(f"--rounds must be >= 1, got {args.rounds}")
  # The stack's shape flags are benchmarks.tnt's, with its defaults.
  shape = bench.parse(["--smoke"] if args.smoke else [])
  for name in ("global_chunk", "shard_length", "layers", "d_model", "heads", "expansion",
               "batch", "context"):
    setattr(args, name, getattr(shape, name))
  if args.smoke:
    args.length, args.chunk, args.baseline_chunk, args.rounds = 64, 16, 8, 1
  return args


def main(argv=None) -> str:
  args = parse(argv)
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; L={args.length} "
        f"layers={args.layers} d_model={args.d_model} heads={args.heads} batch={args.batch}",
        flush=True)
  return run(args)


if __name__ == "__main__":
  main()
