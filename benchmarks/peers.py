"""tnx's memory layers side by side with the public implementations, in one run.

    python -m benchmarks.peers                                   # tnx rows only
    python -m benchmarks.peers --peer_venv runs/peer_venv        # + titans-pytorch
    python -m benchmarks.peers --ttt_lm_jax ~/src/ttt-lm-jax     # + official TTT layers
    python -m benchmarks.peers --smoke                           # tiny shapes (tests)

Protocol (every row): one layer, `jit(grad)` of sum(output) with respect to all parameters and
the input, B=2, L=1024, D=256, 4 heads (head dim D/H on both sides), median of `--steps`
calls after one warm-up call, and the whole table measured `--repeats` times with tnx and peer
rows interleaved, so that machine drift hits both sides alike; the table shows the range over
repetitions.

`--cpu_devices N` splits the CPU into N JAX devices (`tnx.sharding.set_cpu_devices`) and splits
the batch over them with `shard_map` (each device runs its own rows, as in the trainer's data
parallelism) for tnx and ttt-lm-jax alike;
tnx is then also timed on one device in the same run (columns "tnx, one device" and
"data-parallel speed-up"). titans-pytorch always uses torch's own thread pool.

Peers:
* titans-pytorch (`NeuralMemory`, its defaults otherwise): `--peer_venv DIR` creates DIR as a
  virtualenv with torch and titans-pytorch (`--titans_pytorch_version`) if it does not exist
  and runs `benchmarks/peers_torch.py` there, one subprocess per measurement. Its reads come
  from the memory as of the previous chunk boundary, which tnx calls chunk-start retrieval;
  the table compares it with both tnx retrieval modes. Its gradient anchor differs too: with
  its default `batch_size=None` it takes every chunk's gradient at the weights the call
  started with (the momentum and decay then run as an associative scan over chunks), so a
  call has no serial dependence between chunks; tnx (and the Titans paper, Section 3.2)
  takes chunk c's gradients at the state after chunk c - 1. The last two rows run
  titans-pytorch with `batch_size` = chunk (weights updated after every chunk), the same
  anchoring and the same reads as tnx with chunk-start retrieval.
* ttt-lm-jax (the official JAX TTT code) is not a package: `--ttt_lm_jax DIR` loads
  `DIR/ttt/models/ttt_layer.py` into this process and times its `TTTLinear` / `TTTMLP` with
  the 125M configuration's layer settings (mini-batch 16, conv width 4, base lr 1, remat group
  4). That file imports `ttt.infra.jax_utils`, which pulls in torch, transformers and wandb
  for unrelated utilities; a two-function stand-in (sharding constraints off, the same remat
  policy table) replaces it, and its `jnp.clip(a_min=...)` calls are mapped to the current
  signature.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from benchmarks import common
from tnx.memory import titans, ttt

ROWS = (  # (name, tnx layer builder args, peer and its arguments)
    ("Titans, chunk 16", ("titans", 16, "intra_chunk"), ("titans-pytorch", (16, 0))),
    ("Titans, chunk 64", ("titans", 64, "intra_chunk"), ("titans-pytorch", (64, 0))),
    ("Titans, chunk 64, chunk-start reads", ("titans", 64, "chunk_start"),
     ("titans-pytorch", (64, 0))),
    ("TTT-Linear, mini-batch 16", ("ttt_linear", 16, "intra_chunk"), ("ttt-lm-jax", "linear")),
    ("TTT-MLP, mini-batch 16", ("ttt_mlp", 16, "intra_chunk"), ("ttt-lm-jax", "mlp")),
    # The same semantics on both sides: titans-pytorch updating its weights after every chunk.
    ("Titans, chunk 16, chunk-start reads, same anchors", ("titans", 16, "chunk_start"),
     ("titans-pytorch", (16, 16))),
    ("Titans, chunk 64, chunk-start reads, same anchors", ("titans", 64, "chunk_start"),
     ("titans-pytorch", (64, 64))),
)


def tnx_layer(kind: str, d: int, heads: int, chunk: int, retrieval: str) -> nnx.Module:
  rngs = nnx.Rngs(0)
  if kind == "titans":
    cfg = titans.TitansConfig(num_heads=heads, chunk_size=chunk, retrieval=retrieval)
    return titans.TitansMemory(d, cfg, rngs=rngs)
  cfg = ttt.TTTConfig(kind=kind.split("_")[1], num_heads=heads, chunk_size=chunk,
                      retrieval=retrieval)
  return ttt.TTTLayer(d, cfg, rngs=rngs)


def time_grad(apply, params, x, steps: int, devices: int) -> float:
  """Median seconds of jit(grad of sum(apply(params, x))) w.r.t. params and x. With devices
  > 1 the batch is split over the first `devices` devices by `shard_map` (each device runs
  the layer on its own rows, the parameter gradients are summed): the same placement for
  every implementation, whatever its code leaves to automatic partitioning."""
  grad = jax.grad(lambda p, x: jnp.sum(apply(p, x)), argnums=(0, 1))
  step = grad
  if devices > 1:
    from jax.sharding import PartitionSpec as P

    from tnx import sharding

    def rows_grad(p, x):  # one device's rows; parameter gradients summed over the batch axes
      g_p, g_x = grad(p, x)
      return jax.lax.psum(g_p, (sharding.DATA, sharding.FSDP)), g_x

    rows = sharding.batch_spec()
    step = sharding.shard_map(rows_grad, mesh=sharding.make_mesh(data=devices),
                              in_specs=(P(), rows), out_specs=(P(), rows), check_vma=False)
    params, x = common.spread_batch(params, x, devices)
  step = jax.jit(step)
  compiled = step.lower(params, x).compile()
  return common.time_fn(lambda: compiled(params, x), steps=steps, warmup=1)


def time_tnx(spec, a, devices: int) -> float:
  kind, chunk, retrieval = spec
  layer = tnx_layer(kind, a.d_model, a.heads, chunk, retrieval)
  graphdef, params, rest = nnx.split(layer, nnx.Param, ...)
  x = jax.random.normal(jax.random.PRNGKey(1), (a.batch, a.length, a.d_model), jnp.float32)
  return time_grad(lambda p, x: nnx.merge(graphdef, p, rest)(x), params, x, a.steps, devices)


# ---------------------------------------------------------------------------- ttt-lm-jax


def load_ttt_lm_jax(root: str) -> types.ModuleType:
  """The official ttt_layer module, with a stand-in for its heavy `ttt.infra.jax_utils`."""
  path = Path(root).expanduser() / "ttt" / "models" / "ttt_layer.py"
  if not path.exists():
    raise ValueError(f"--ttt_lm_jax={root!r}: {path} not found (give a ttt-lm-jax checkout)")
  stand_in = types.ModuleType("ttt.infra.jax_utils")
  stand_in.with_sharding_constraint = lambda x, spec: x     # single device: no constraint
  stand_in.get_gradient_checkpoint_policy = lambda name: {
      "everything_saveable": jax.checkpoint_policies.everything_saveable,
      "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
      "checkpoint_dots": jax.checkpoint_policies.checkpoint_dots,
      "checkpoint_dots_with_no_batch_dims":
          jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims}[name]
  for name in ("ttt", "ttt.infra"):
    sys.modules.setdefault(name, types.ModuleType(name))
  sys.modules["ttt.infra.jax_utils"] = stand_in
  spec = importlib.util.spec_from_file_location("ttt_lm_jax_layer", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  module.jnp = _NumpyCompat()
  return module


class _NumpyCompat(types.ModuleType):
  """jax.numpy as the 2024 code expects it: `clip(a_min=, a_max=)`, removed in newer jax."""

  def __init__(self):
    super().__init__("jnp_compat")

  def __getattr__(self, name):
    return getattr(jnp, name)

  @staticmethod
  def clip(x, a_min=None, a_max=None, **kwargs):
    return jnp.clip(x, kwargs.pop("min", a_min), kwargs.pop("max", a_max), **kwargs)


def time_ttt_lm_jax(module, kind: str, a) -> float:
  config = types.SimpleNamespace(
      hidden_size=a.d_model, num_attention_heads=a.heads, mini_batch_size=16,
      max_sequence_length=a.length, rope_theta=10000.0, initializer_range=0.02,
      ttt_base_lr=1.0 if kind == "linear" else 0.1, remat_conv="", conv_width=4,
      output_ttt_stats=False, remat_mini_batch_group_size=4)
  layer = (module.TTTLinear if kind == "linear" else module.TTTMLP)(config=config)
  x = jax.random.normal(jax.random.PRNGKey(1), (a.batch, a.length, a.d_model), jnp.float32)
  pos = lambda x: jnp.broadcast_to(jnp.arange(x.shape[1]), x.shape[:2])  # the rows it gets
  params = layer.init(jax.random.PRNGKey(0), x, position_ids=pos(x))
  apply = lambda p, x: layer.apply(p, x, position_ids=pos(x))[0]
  return time_grad(apply, params, x, a.steps, a.cpu_devices)


# ------------------------------------------------------------------------- titans-pytorch


def ensure_peer_venv(venv: str, version: str) -> Path:
  python = Path(venv) / "bin" / "python"
  if not python.exists():
    print(f"creating {venv} with torch and titans-pytorch=={version} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["--upgrade", "pip"], check=True)
    subprocess.run(pip + ["torch", f"titans-pytorch=={version}"], check=True)
  return python


def time_titans_pytorch(python: Path, chunk: int, batch_size: int, a) -> tuple[float, str]:
  """Seconds per step of NeuralMemory(chunk_size=chunk, batch_size=batch_size or None)."""
  worker = Path(__file__).with_name("peers_torch.py")
  cmd = [str(python), str(worker), "--chunk", str(chunk), "--batch_size", str(batch_size),
         "--batch", str(a.batch), "--length",
         str(a.length), "--d_model", str(a.d_model), "--heads", str(a.heads), "--steps",
         str(a.steps)]
  out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
  rec = json.loads(out.strip().splitlines()[-1])
  name = rec["peer"] + (f", batch_size {batch_size}" if batch_size else "")
  return rec["step_s"], name


# ------------------------------------------------------------------------------------ main


def span(values: list[float]) -> str:
  lo, hi = min(values), max(values)
  return f"{lo:,.0f}" if len(values) == 1 or hi - lo < 0.5 else f"{lo:,.0f}-{hi:,.0f}"


def main(argv=None) -> list[dict]:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--smoke", action="store_true", help="tiny shapes, tnx rows only")
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--length", type=int, default=1024)
  p.add_argument("--d_model", type=int, default=256)
  p.add_argument("--heads", type=int, default=4)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--repeats", type=int, default=2)
  p.add_argument("--peer_venv", default="", help="virtualenv for titans-pytorch (created)")
  p.add_argument("--titans_pytorch_version", default="0.5.5")
  p.add_argument("--ttt_lm_jax", default="", help="path of a ttt-lm-jax checkout")
  p.add_argument("--rows", default="", help="comma-separated row numbers (default: all)")
  p.add_argument("--out", default="runs/benchmarks/peers.json")
  common.add_cpu_devices_flag(p)
  a = p.parse_args(argv)
  common.split_cpu(a.cpu_devices)
  if a.smoke:
    a.length, a.d_model, a.heads, a.steps, a.repeats = 128, 32, 2, 1, 1
  torch_python = ensure_peer_venv(a.peer_venv, a.titans_pytorch_version) if a.peer_venv else None
  ttt_module = load_ttt_lm_jax(a.ttt_lm_jax) if a.ttt_lm_jax else None
  matmul = common.matmul_flops_per_second(256 if a.smoke else 1024)
  print(f"backend {jax.default_backend()}, {jax.device_count()} device(s), {os.cpu_count()} "
        f"CPUs; float32 matmul {matmul / 1e9:.1f} GFLOP/s; B={a.batch} L={a.length} "
        f"D={a.d_model} H={a.heads}", flush=True)
  tokens = a.batch * a.length
  chosen = [ROWS[int(i)] for i in a.rows.split(",")] if a.rows else list(ROWS)
  results = {name: {"tnx": [], "tnx_one_device": [], "peer": [], "peer_name": ""}
             for name, _, _ in chosen}
  several = a.cpu_devices > 1   # then also tnx on one device, for the same-run speed-up
  for rep in range(a.repeats):
    for name, spec, (peer, arg) in chosen:
      rec = results[name]
      rec["tnx"].append(tokens / time_tnx(spec, a, a.cpu_devices))
      if several:
        rec["tnx_one_device"].append(tokens / time_tnx(spec, a, 1))
      if peer == "titans-pytorch" and torch_python is not None:
        sec, rec["peer_name"] = time_titans_pytorch(torch_python, *arg, a)
        rec["peer"].append(tokens / sec)
      elif peer == "ttt-lm-jax" and ttt_module is not None:
        rec["peer"].append(tokens / time_ttt_lm_jax(ttt_module, arg, a))
        rec["peer_name"] = "ttt-lm-jax"
      print(f"  repeat {rep}: {name}: tnx {rec['tnx'][-1]:,.0f} tokens/s"
            + (f" (one device {rec['tnx_one_device'][-1]:,.0f})" if several else "")
            + (f", {rec['peer_name']} {rec['peer'][-1]:,.0f}" if rec["peer"] else ""),
            flush=True)
  rows, records = [], []
  for name, _, (peer, _) in chosen:
    rec = results[name]
    per_rep = [t / q for t, q in zip(rec["tnx"], rec["peer"])]   # same repetition: same drift
    ratio = f"{min(per_rep):.2f}-{max(per_rep):.2f}x" if per_rep else "-"
    row = [name, span(rec["tnx"]), f"{rec['peer_name'] or peer + ' (not run)'}: "
           + (span(rec["peer"]) if rec["peer"] else "-"), ratio]
    if several:
      spread = [t / o for t, o in zip(rec["tnx"], rec["tnx_one_device"])]
      row[2:2] = [span(rec["tnx_one_device"]), f"{min(spread):.2f}-{max(spread):.2f}x"]
    rows.append(row)
    records.append({"layer": name, **rec})
  header = ["layer", "tnx tokens/s", "peer tokens/s", "ratio"]
  if several:
    header[2:2] = ["tnx, one device", "data-parallel speed-up"]
  common.print_table(header, rows)
  common.write_json(a.out, {"matmul_flops": matmul, "rows": records, "args": vars(a)})
  return records


if __name__ == "__main__":
  main()
