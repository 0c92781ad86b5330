"""Speed of test-time CoT for the LSA and of small-GPT training (tnx.icl).

    python -m benchmarks.icl            # d = 10, B = 256 prompts, m in {50, 200, 800}, k = 30
    python -m benchmarks.icl --smoke    # seconds

Table 1: prompts/s of k CoT steps of the LSA (float32, jitted, vmap over prompts) for
  appended/fast    appended columns, each step evaluated as V (Z (Z^T (W z))):
                   O((2d+2)^2 + (2d+2)(m+k)) per step
  appended/naive   appended columns, each step evaluates the whole f(Z) and takes its column:
                   O((2d+2)^2 (m+k) + (2d+2)(m+k)^2) per step
  looped           the query column looped over fixed data columns (exact for the sparse LSA)
and the speed-up of the fast order over the naive one.
Table 2: training steps/s of the small GPT (batch 64, Adam, fresh prompts).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks import common
from tnx.icl import cot, gpt, lsa, task, train_lsa


def cot_rows(d: int, batch: int, ms: list[int], k: int, steps: int) -> list[list]:
  lam = np.diag(task.power_law_spectrum(d, 1.0, trace=d))
  params = lsa.optimal_params(lam, 20, dtype=jnp.float32)
  rows = []
  for m in ms:
    prompts = task.sample_prompts(jax.random.key(m), batch, m, task.cov_sqrt(lam))
    rates = {}
    for form, order in (("appended", "fast"), ("appended", "naive"), ("looped", "fast")):
      fn = lambda: cot.estimates(params, prompts, k, form=form, order=order)
      sec = common.time_fn(fn, steps=steps, warmup=1, max_seconds=20)
      rates[f"{form}/{order}" if form == "appended" else form] = batch / sec
    rows.append([d, m, k, batch, rates["appended/fast"], rates["appended/naive"],
                 rates["looped"], rates["appended/fast"] / rates["appended/naive"]])
  return rows


def gpt_rows(shapes: list[tuple[int, int, int]], ns: list[int], batch: int, steps: int
             ) -> list[list]:
  sampler, _ = train_lsa.make_sampler(np.eye(5))
  rows = []
  for d_model, n_layers, n_heads in shapes:
    cfg = gpt.GPTConfig(d=5, d_model=d_model, n_layers=n_layers, n_heads=n_heads)
    model = gpt.ICLTransformer(cfg, rngs=nnx.Rngs(0))
    for n in ns:
      opts = gpt.GPTTrainOptions(n=n, batch=batch)
      holder = {}
      holder["state"], holder["opt"], step, _ = gpt.make_train_step(
          model, optax.adam(1e-3), sampler, opts)
      keys = iter(jax.random.split(jax.random.key(n), 10_000))

      def run():
        holder["state"], holder["opt"], loss = step(holder["state"], holder["opt"], next(keys))
        return loss

      sec = common.time_fn(run, steps=steps, warmup=2, max_seconds=30)
      rows.append([d_model, n_layers, n_heads, gpt.param_count(model), n, 2 * n + 1, batch,
                   1 / sec, batch * (2 * n + 1) / sec])
  return rows


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
  p.add_argument("--json", default="", help="also write the rows to this JSON file")
  a = p.parse_args(argv)
  if a.smoke:
    cot_r = cot_rows(3, 16, [10], 4, steps=2)
    gpt_r = gpt_rows([(16, 1, 2)], [4], 8, steps=2)
  else:
    cot_r = cot_rows(10, 256, [50, 200, 800], 30, steps=10)
    gpt_r = gpt_rows([(32, 3, 2), (64, 4, 4)], [10, 30], 64, steps=10)
  print(f"devices: {jax.devices()}")
  print("\nLSA test-time CoT, prompts/s (float32)\n")
  common.print_table(["d", "m", "k", "B", "appended fast", "appended naive", "looped",
                      "fast / naive"], cot_r)
  print("\nsmall GPT training, steps/s (Adam, fresh prompts, train_cot = 1)\n")
  common.print_table(["D", "layers", "heads", "params", "n", "tokens", "B", "steps/s",
                      "tokens/s"], gpt_r)
  if a.json:
    common.write_json(a.json, {"cot": cot_r, "gpt": gpt_r})
  return cot_r, gpt_r


if __name__ == "__main__":
  main()
