"""Forward+backward speed of the memory layers and of the Omega-rule primitive against chunk
size.

    python -m benchmarks.memory                # B=2, L in {1024, 4096}, D=256, 4 heads
    python -m benchmarks.memory --layers omega_gd,omega_momentum,omega_muon --lengths 1024
    python -m benchmarks.memory --smoke        # seconds; used by the tests

For each layer, length and chunk size: training-step time (forward + backward of sum(y^2)
with respect to all parameters), tokens/s, XLA's planned peak memory, and FLOP utilization:
model FLOPs (3x an analytic forward count of the matmuls, remat recompute not counted) per
second divided by the FLOP/s of a float32 matmul timed in the same run. The `omega_*` rows
time the primitive alone (`chunked_memory` with an Omega window of 4, the ATLAS MLP memory,
gd / momentum / Muon, head width K = D / heads, identity features): the step is the forward
and backward of mean(o^2) with respect to the initial state, q, k, v and every gate (no FLOP
count: reported as nan).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from flax import nnx

from benchmarks import common
from tnx.memory import chunked, titans, ttt
from tnx.memory import model as mm

OMEGA_WINDOW = 4


def memory_forward_flops(dims, chunk: int, n_chunks: int, momentum: bool) -> float:
  """Matmul FLOPs of the chunked primitive's forward for one sequence and head."""
  per_chunk = 0.0
  for i, (din, dout) in enumerate(dims):
    mac = chunk * din * dout
    per_chunk += 2 * mac                           # forward of f on the keys
    per_chunk += 2 * mac if i > 0 else 0           # back-propagated gradient to layer i-1
    per_chunk += 2 * mac * (2 if momentum else 1)  # reads h W_S (and h W_M)
    per_chunk += 2 * chunk * chunk * (din + dout)  # dual form: h a^T and (G o .) d
    per_chunk += 2 * mac * (2 if momentum else 1)  # end-of-chunk state (and momentum)
  if momentum:
    per_chunk += 2 * chunk**3                      # coefficient matrix product
  return per_chunk * n_chunks


def layer_forward_flops(kind: str, b: int, length: int, d: int, h: int, k: int, chunk: int,
                        mem: mm.MemoryModelConfig, momentum: bool) -> float:
  hk = h * k
  n_proj = 5 if kind == "titans" else 4            # q,k,v,gate,out vs qk,v,gate,out
  proj = 2.0 * b * length * d * hk * n_proj
  n_chunks = -(-length // chunk)
  return proj + b * h * memory_forward_flops(mem.dims(k), chunk, n_chunks, momentum)


def make_layer(kind: str, d: int, heads: int, chunk: int):
  rngs = nnx.Rngs(0)
  if kind == "titans":
    cfg = titans.TitansConfig(num_heads=heads, chunk_size=chunk)
    return titans.TitansMemory(d, cfg, rngs=rngs), cfg.memory, True
  cfg = ttt.TTTConfig(kind="mlp", num_heads=heads, chunk_size=chunk)
  return ttt.TTTLayer(d, cfg, rngs=rngs), cfg.memory, False


def omega_problem(b: int, length: int, heads: int, k: int, seed: int = 1) -> dict:
  """Inputs of the Omega-rule rows: unit-norm q/k [B, H, L, K], v, lr and gates as the ATLAS
  mixer makes them (from logits: log-sigmoid retention and momentum decay, sigmoid window
  gates [B, H, L, c])."""
  ks = jax.random.split(jax.random.PRNGKey(seed), 6)
  unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
  q, kk, v = (jax.random.normal(ks[i], (b, heads, length, k), jnp.float32) for i in range(3))
  z = lambda i, shape, bias: jax.random.normal(ks[i], shape, jnp.float32) + bias
  lead = (b, heads, length)
  return dict(q=unit(q), k=unit(kk), v=v, lr=0.1 * jax.nn.sigmoid(z(3, lead, -2.0)),
              log_retention=jax.nn.log_sigmoid(z(4, lead, 5.0)),
              log_mom_decay=jax.nn.log_sigmoid(z(5, lead, 2.2)),
              window_gate=jax.nn.sigmoid(z(5, lead + (OMEGA_WINDOW,), 3.0)))


def omega_run(optimizer: str, chunk: int):
  """(memory config, run(state0, inputs) -> o) for the current primitive."""
  cfg = mm.MemoryModelConfig.from_kind("gated_mlp" if optimizer == "muon" else "mlp")
  rule = chunked.UpdateRule(window=OMEGA_WINDOW, optimizer=optimizer, step_placement="outside")

  def run(state0, inp):
    gates = {n: inp[n] for n in ("log_retention", "window_gate")}
    if optimizer != "gd":
      gates["log_mom_decay"] = inp["log_mom_decay"]
    return chunked.chunked_memory(cfg, state0, inp["q"], inp["k"], inp["v"], inp["lr"],
                                  chunk_size=chunk, rule=rule, **gates)[0]

  return cfg, run


def time_omega(run, state0, inp, steps, max_seconds):
  """Median forward+backward time of mean(run(state0, inp)^2) and XLA's planned peak."""
  loss = lambda s, x: jnp.mean(jnp.square(run(s, x)))
  compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(state0, inp).compile()
  sec = common.time_fn(lambda: compiled(state0, inp), steps=steps, warmup=1,
                       max_seconds=max_seconds)
  return sec, common.compiled_peak_bytes(compiled)


def bench_one(kind, b, length, d, heads, chunk, steps, max_seconds, devices=0):
  if kind.startswith("omega_"):
    k = d // heads
    cfg, run = omega_run(kind[len("omega_"):], chunk)
    state0 = mm.init_state(cfg, jax.random.PRNGKey(0), k, heads)
    sec, peak = time_omega(run, state0, omega_problem(b, length, heads, k), steps, max_seconds)
    return sec, float("nan"), peak
  layer, mem, momentum = make_layer(kind, d, heads, chunk)
  graphdef, params, rest = nnx.split(layer, nnx.Param, ...)
  x = jax.random.normal(jax.random.PRNGKey(1), (b, length, d), jnp.float32)
  params, x = common.spread_batch(params, x, devices)

  def loss(p, x):
    return jnp.mean(jnp.square(nnx.merge(graphdef, p, rest)(x)))

  step = jax.jit(jax.value_and_grad(loss))
  compiled = step.lower(params, x).compile()
  sec = common.time_fn(lambda: compiled(params, x), steps=steps, warmup=1,
                       max_seconds=max_seconds)
  flops = 3.0 * layer_forward_flops(kind, b, length, d, heads, d // heads, chunk, mem, momentum)
  return sec, flops, common.compiled_peak_bytes(compiled)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--smoke", action="store_true", help="tiny shapes, runs in seconds")
  p.add_argument("--layers", default="titans,ttt",
                 help="comma list of titans, ttt, omega_gd, omega_momentum, omega_muon")
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--lengths", default="1024,4096")
  p.add_argument("--chunks", default="1,8,16,64,256")
  p.add_argument("--d_model", type=int, default=256)
  p.add_argument("--heads", type=int, default=4)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--max_seconds", type=float, default=60.0, help="time budget per row")
  p.add_argument("--out", default="runs/benchmarks/memory.json")
  common.add_cpu_devices_flag(p)
  a = p.parse_args(argv)
  common.split_cpu(a.cpu_devices)
  if a.smoke:
    a.lengths, a.chunks, a.d_model, a.heads, a.steps = "64", "1,16", 32, 2, 2
  lengths = [int(v) for v in a.lengths.split(",")]
  chunks = [int(v) for v in a.chunks.split(",")]
  matmul = common.matmul_flops_per_second(256 if a.smoke else 1024)
  print(f"backend {jax.default_backend()}, {jax.device_count()} device(s); float32 matmul "
        f"{matmul / 1e9:.1f} GFLOP/s", flush=True)
  rows, records = [], []
  for kind in a.layers.split(","):
    for length in lengths:
      for chunk in chunks:
        sec, flops, peak = bench_one(kind, a.batch, length, a.d_model, a.heads, chunk,
                                     a.steps, a.max_seconds, a.cpu_devices)
        rate = flops / sec
        row = [kind, length, chunk, a.batch * length / sec, sec * 1e3,
               (peak or float("nan")) / 2**20, rate / 1e9, 100.0 * rate / matmul]
        rows.append(row)
        records.append(dict(zip(["layer", "L", "C", "tokens_per_s", "step_ms", "peak_mb",
                                 "gflops", "util_pct"], row)))
        print("  " + ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row),
              flush=True)
  common.print_table(["layer", "L", "C", "tokens/s", "step ms", "XLA peak MB", "GFLOP/s",
                      "% of matmul"], rows)
  common.write_json(a.out, {"matmul_flops": matmul, "rows": records, "args": vars(a)})
  return records


if __name__ == "__main__":
  main()
