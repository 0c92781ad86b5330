"""Training-step time of TNT vs the Titans baseline (and full attention) against sequence
length.

    python -m benchmarks.tnt --plot docs/tnt_step_time.png   # L in {1024, 2048, 4096, 8192}
    python -m benchmarks.tnt --lengths 8192 16384 32768 --max_gb 16   # the longest that fit
    python -m benchmarks.tnt --smoke     # tiny sizes, seconds

A "step" is forward + backward (jax.value_and_grad, jitted) of a stack of `--layers` memory
layers with residual connections, batch `--batch`, float32. The Titans baseline uses chunk
C in {8, 16, 64}; TNT uses one local memory with C_L in {8, 16, 64}, C_G = 2048 and
S_L = min(2048, L). Both use TNT's simplified Titans (no momentum, no forget gate). Parameter
counts are matched by giving the single Titans memory twice the MLP width of each of TNT's two
memories (printed per row). Each row also lists the serial chunk steps per layer (Titans: L/C;
TNT: S_L/C_L local steps on L/S_L folded shards plus L/C_G global steps), the quantity that
bounds the time of small chunks on a CPU. An attention row (`--attention`, on by default:
`tnx.nn.attention.Attention`, full causal, same width and heads; no serial chain) gives the
quadratic reference. Every row reports XLA's planned peak memory of the compiled step; a row
whose plan exceeds `--max_gb` is not run and says so.

`--cpu_devices N --context N` splits the CPU into N devices and runs TNT context-parallel over
them (`tnx.tnt.context_parallel`: the sequence's shards spread over the devices); Titans'
chunk recurrence is one serial chain per sequence and attention's step one program, so they
stay on one device (their rows time the same code as without the flags). The parameters,
inputs and outputs are the same either way.
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from benchmarks import common
from tnx.memory import model as mm
from tnx.memory.titans import TitansConfig, TitansMemory
from tnx.nn.attention import Attention
from tnx.tnt import TNTConfig, TNTMemory


class Stack(nnx.Module):
  """`n` memory layers with pre-RMS-norm residual connections: [B, L, D] -> [B, L, D]."""

  def __init__(self, make, n: int, d: int, *, rngs: nnx.Rngs):
    self.layers = nnx.List([make(rngs) for _ in range(n)])
    self.norms = nnx.List([nnx.RMSNorm(d, rngs=rngs) for _ in range(n)])

  def __call__(self, x):
    for norm, layer in zip(self.norms, self.layers):
      x = x + layer(norm(x))
    return x


def _titans(args, chunk):
  cfg = TitansConfig(num_heads=args.heads, chunk_size=chunk, momentum=False, forget=False,
                     memory=mm.MemoryModelConfig(depth=2, expansion=2 * args.expansion))
  return lambda rngs: TitansMemory(args.d_model, cfg, rngs=rngs)


def _tnt(args, chunk, length, **overrides):
  """TNT with one local memory of chunk `chunk`; `overrides` replace TNTConfig fields."""
  cfg = TNTConfig(num_heads=args.heads, global_chunk_size=args.global_chunk,
                  local_chunk_sizes=(chunk,), shard_length=min(args.shard_length, length),
                  memory=mm.MemoryModelConfig(depth=2, expansion=args.expansion))
  cfg = dataclasses.replace(cfg, **overrides)
  mesh = None
  if args.context > 1:
    from tnx import sharding
    mesh = sharding.make_mesh(data=1, context=args.context)
  return lambda rngs: TNTMemory(args.d_model, cfg, rngs=rngs, mesh=mesh)


def _attention(args):
  return lambda rngs: Attention(args.d_model, args.heads, rngs=rngs)


def compile_step(make, args, length: int):
  """The compiled forward+backward step of `args.layers` layers from `make` at length
  `length`: (compiled, params, x, parameter count, planned peak bytes or None)."""
  model = Stack(make, args.layers, args.d_model, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  count = sum(int(p.size) for p in jax.tree.leaves(params))
  x = jax.random.normal(jax.random.key(1), (args.batch, length, args.d_model), jnp.float32)

  def step(params, x):
    loss = lambda p: jnp.mean(jnp.square(nnx.merge(graphdef, p)(x)))
    return jax.value_and_grad(loss)(params)

  compiled = jax.jit(step).lower(params, x).compile()
  return compiled, params, x, count, common.compiled_peak_bytes(compiled)


def step_time(make, args, length: int) -> tuple[float | None, int, float | None]:
  """(median seconds of one jitted forward+backward step or None when XLA's planned peak
  exceeds args.max_gb, parameter count, planned peak bytes)."""
  compiled, params, x, count, peak = compile_step(make, args, length)
  if peak is not None and peak > args.max_gb * 2**30:
    return None, count, peak
  sec = common.time_fn(lambda: compiled(params, x), steps=args.steps, warmup=1,
                       max_seconds=args.max_seconds)
  return sec, count, peak


def run(args) -> str:
  rows = []
  for length in args.lengths:
    base = None
    s_l = min(args.shard_length, length)
    arms = [("Titans", c) for c in args.chunks] + [("TNT", c) for c in args.chunks]
    for kind, chunk in arms + ([("Attention", None)] if args.attention else []):
      if kind == "Titans":
        sec, count, peak = step_time(_titans(args, chunk), args, length)
        serial, name = -(-length // chunk), f"Titans C={chunk}"
      elif kind == "TNT":
        sec, count, peak = step_time(_tnt(args, chunk, length), args, length)
        serial = s_l // chunk + -(-length // args.global_chunk)
        name = f"TNT C_L={{{chunk}}}"
      else:
        (sec, count, peak), serial, name = step_time(_attention(args), args, length), 0, kind
      if kind == "Titans" and chunk == args.chunks[0]:
        base = sec
      mb = "-" if peak is None else round(peak / 2**20, 1)
      if sec is None:
        rows.append([length, name, count, serial, f"not run: plan > {args.max_gb} GB", mb, "-"])
        print(f"  skipped L={length} {name}: planned peak {mb} MB", flush=True)
        continue
      rows.append([length, name, count, serial, sec * 1e3, mb,
                   "-" if base is None else base / sec])
      print(f"  measured L={length} {name}: {sec * 1e3:.1f} ms", flush=True)
  header = ["L", "model", "params", "serial chunk steps / layer", "step ms (fwd+bwd)",
            "planned peak MB", f"speedup vs Titans C={args.chunks[0]}"]
  return common.print_table(header, rows)


def plot_table(table: str, path: str) -> None:
  """Step time vs L per model (log-log) from the printed markdown table, saved as PNG."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  series: dict[str, list[tuple[int, float]]] = {}
  for line in table.splitlines()[2:]:
    cells = [c.strip() for c in line.strip("|").split("|")]
    if not cells[4].startswith("not run"):
      series.setdefault(cells[1], []).append((int(cells[0]), float(cells[4])))
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, pts in series.items():
    ls = {"Titans": "--", "Attention": ":"}.get(name.split()[0], "-")
    ax.plot(*zip(*pts), marker="o", ls=ls, label=name)
  ax.set(xscale="log", yscale="log", xlabel="sequence length L", ylabel="fwd+bwd step (ms)",
         title="TNT vs Titans vs attention: training step time (CPU)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--smoke", action="store_true", help="tiny sizes that run in seconds")
  p.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
  p.add_argument("--chunks", type=int, nargs="+", default=[8, 16, 64])
  p.add_argument("--global_chunk", type=int, default=2048)
  p.add_argument("--shard_length", type=int, default=2048)
  p.add_argument("--layers", type=int, default=2)
  p.add_argument("--d_model", type=int, default=64)
  p.add_argument("--heads", type=int, default=4)
  p.add_argument("--expansion", type=int, default=2, help="TNT memory MLP width / head dim")
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--steps", type=int, default=3, help="timed steps (median)")
  p.add_argument("--max_seconds", type=float, default=20.0, help="stop timing a row early")
  p.add_argument("--plot", default="", help="save a step-time plot (PNG) to this path")
  p.add_argument("--attention", action=argparse.BooleanOptionalAction, default=True,
                 help="also time full causal attention of the same width")
  p.add_argument("--max_gb", type=float, default=12.0,
                 help="skip a row whose compiled step plans more memory than this")
  p.add_argument("--context", type=int, default=1,
                 help="TNT's context-parallel size (devices; needs --cpu_devices on a CPU)")
  common.add_cpu_devices_flag(p)
  args = p.parse_args(argv)
  common.split_cpu(args.cpu_devices)
  if args.smoke:
    args.lengths, args.chunks, args.global_chunk, args.shard_length = [64], [8], 32, 16
    args.layers, args.d_model, args.heads, args.steps = 1, 16, 2, 1
  return args


def main(argv=None) -> str:
  args = parse(argv)
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {jax.device_count()} device(s); "
        f"layers={args.layers} d_model={args.d_model} heads={args.heads} batch={args.batch}",
        flush=True)
  table = run(args)
  if args.plot:
    plot_table(table, args.plot)
  return table


if __name__ == "__main__":
  main()
