"""Times titans-pytorch's NeuralMemory; runs inside the side virtualenv that benchmarks.peers
creates (torch + titans-pytorch, no tnx, no jax) and prints one JSON line per measurement.

    <venv>/bin/python benchmarks/peers_torch.py --chunk 16 --batch 2 --length 1024 \
        --d_model 256 --heads 4 --steps 3

The step is the same as tnx's side: forward, sum of the output, backward with respect to all
parameters and the input; median wall time of `steps` calls after one warm-up call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--chunk", type=int, required=True)
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--length", type=int, default=1024)
  p.add_argument("--d_model", type=int, default=256)
  p.add_argument("--heads", type=int, default=4)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
  p.add_argument("--batch_size", type=int, default=0,
                 help="NeuralMemory batch_size: update the weights every this many tokens (0: "
                      "its default, None: every chunk's gradient at the call's initial weights)")
  a = p.parse_args()

  import titans_pytorch
  import torch

  if a.threads:
    torch.set_num_threads(a.threads)
  torch.manual_seed(0)
  mem = titans_pytorch.NeuralMemory(dim=a.d_model, chunk_size=a.chunk, heads=a.heads,
                                    dim_head=a.d_model // a.heads,
                                    batch_size=a.batch_size or None)
  x = torch.randn(a.batch, a.length, a.d_model, requires_grad=True)

  def step() -> None:
    mem.zero_grad(set_to_none=True)
    x.grad = None
    out, _ = mem(x)
    out.sum().backward()

  step()
  times = []
  for _ in range(a.steps):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
  sec = statistics.median(times)
  version = getattr(titans_pytorch, "__version__", None)
  if version is None:
    from importlib import metadata
    version = metadata.version("titans-pytorch")
  print(json.dumps({"peer": f"titans-pytorch {version}", "chunk": a.chunk,
                    "batch_size": a.batch_size or None, "step_s": sec,
                    "tokens_per_s": a.batch * a.length / sec,
                    "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
  main()
