"""The LM part of examples.data_mixing: a byte-level tnx LM on four standard-library domains
(tests, net, text, core), one of them corrupted (bytes shuffled within every line), trained
with tnx.train and its multi-domain data (tnx.train.domains) under Uniform, ERMA loss
weights, VA sampling weights and both; compared on the clean domains' validation bits/byte.

Run through `python -m examples.data_mixing --experiment=lm`; the sizes are `config.lm`.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DOMAINS = "tests,net,text,core"
METHODS = {"uniform": ("none", "pi"), "erma": ("erma", "pi"), "va": ("none", "va"),
           "both": ("erma", "va")}
COLORS = {"uniform": "tab:gray", "erma": "tab:blue", "va": "tab:orange", "both": "tab:green"}


def train_config(cfg: Any, method: str, workdir: str) -> Any:
  """The tnx.train config of one method (tnx/configs/lm.py plus the domains block)."""
  from tnx.configs import lm as lm_config
  from tnx.train import domains
  m = cfg.lm
  c = lm_config.get_config()
  c.workdir = workdir
  c.seed = cfg.base_seed
  c.model.d_model, c.model.n_layers, c.model.n_heads = m.d_model, m.n_layers, 4
  c.model.window = m.seq_len
  c.data.seq_len, c.data.global_batch, c.data.max_bytes = m.seq_len, m.global_batch, m.max_bytes
  c.data.val_fraction, c.data.seed = 0.1, cfg.base_seed
  c.opt.peak_lr, c.opt.warmup_steps = m.peak_lr, max(2, m.steps // 20)
  c.train.steps, c.train.log_every = m.steps, max(1, m.steps // 50)
  c.train.eval_every, c.train.eval_batches = max(1, m.steps // 6), m.eval_batches
  c.train.ckpt_every, c.train.progress, c.train.plot = 0, False, False
  if "domains" not in c:
    c.domains = domains.default_config()
  d = c.domains
  d.names, d.corrupt = DOMAINS, m.corrupt
  d.loss_rule, d.sampling = METHODS[method]
  d.update_every = max(1, m.steps // 12)
  d.erma_gamma1, d.erma_gamma2 = cfg.mix.erma_gamma1, cfg.mix.erma_gamma2
  d.val_batches = max(1, m.eval_batches // 4)
  return c


def run_lm(cfg: Any, out: str) -> dict[str, Any]:
  from tnx.train import metrics, trainer
  names = DOMAINS.split(",")
  clean = [n for n in names if n != cfg.lm.corrupt]
  results: dict[str, Any] = {"domains": names, "corrupt": cfg.lm.corrupt, "methods": {}}
  curves: dict[str, Any] = {}
  for method in [m for m in cfg.lm.methods.split(",") if m]:
    workdir = os.path.join(out, method)
    shutil.rmtree(workdir, ignore_errors=True)  # this example's own run directory
    summary = trainer.train(train_config(cfg, method, workdir))
    rows = metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    evals = [r for r in rows if r.get("kind") == "eval"]
    mix = [r for r in rows if r.get("kind") == "mixing"]
    ev = summary["eval"]
    results["methods"][method] = {
        "clean_bpb": float(np.mean([ev[f"{n}/bits_per_byte"] for n in clean])),
        "bpb": {n: ev[f"{n}/bits_per_byte"] for n in names},
        "w": {n: mix[-1][f"{n}/w"] for n in names} if mix else {n: 1.0 for n in names},
        "p": {n: mix[-1][f"{n}/p"] for n in names} if mix else {n: 0.25 for n in names},
        "train_wall_s": summary.get("train_wall_s")}
    curves[method] = (evals, mix)
  fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
  c = cfg.lm.corrupt
  for method, (evals, mix) in curves.items():
    steps = [r["step"] for r in evals]
    axes[0].plot(steps, [np.mean([r[f"{n}/bits_per_byte"] for n in clean]) for r in evals],
                 color=COLORS[method], label=method)
    if mix:
      ms = [r["step"] for r in mix]
      axes[1].plot(ms, [r[f"{c}/w"] for r in mix], color=COLORS[method], label=method)
      axes[2].plot(ms, [r[f"{c}/p"] for r in mix], color=COLORS[method], label=method)
  axes[0].set(xlabel="step", ylabel="clean domains' val bits/byte")
  axes[1].set(xlabel="step", ylabel=f"loss weight w of '{c}' (corrupted)")
  axes[2].set(xlabel="step", ylabel=f"sampling weight p of '{c}'", ylim=(0, 1))
  for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(f"byte LM on stdlib domains {DOMAINS} ('{c}' shuffled within lines)")
  fig.tight_layout()
  fig.savefig(os.path.join(out, "lm_curves.png"), dpi=110)
  plt.close(fig)
  return results


def lm_table(res: dict[str, Any]) -> str:
  names = res["domains"]
  lines = [f"\nDomains {names}, corrupted: {res['corrupt']!r}. Validation bits/byte per domain "
           "at the end; 'clean' = mean over the uncorrupted domains.\n",
           "| method | clean bpb | " + " | ".join(f"{n} bpb" for n in names) +
           " | w (last) | p (last) |", "|---" * (len(names) + 4) + "|"]
  for method, m in res["methods"].items():
    lines.append(f"| {method} | {m['clean_bpb']:.4f} | " +
                 " | ".join(f"{m['bpb'][n]:.4f}" for n in names) +
                 f" | {[round(m['w'][n], 3) for n in names]} | "
                 f"{[round(m['p'][n], 3) for n in names]} |")
  return "\n".join(lines)
