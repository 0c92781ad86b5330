"""The main job: Titans (chunk 8) vs TNT of equal parameter count on the default corpus.

  python -m examples.tnt_lm                    # ~10 minutes on a loaded 2-core CPU
  python -m examples.tnt_lm --smoke            # ~1.5 min CPU, nearly all XLA compilation
  python -m examples.tnt_lm --config.job.stage1_steps=2000 --config.model.d_model=128

Both models are pure memory LMs (every layer's token mixer is the memory) with the simplified
Titans memory TNT's experiments use (no momentum, no forget gate). TNT runs stage 1 at local
chunk `job.tnt_local_chunks`, then stage 2 continues from its parameters for
`job.stage2_steps` at `job.stage2_local_chunks`. The Titans model's MLP width is adjusted so
both models have the same parameter count (within one MLP column). Validation loss on a fixed
set (the first `train.eval_batches` batches of the validation split) every
`train.eval_every` steps gives the curves against training time and tokens.
"""

from __future__ import annotations

import ml_collections as mlc

from tnx.configs import lm


def get_config(arg: str | None = None) -> mlc.ConfigDict:
  c = lm.get_config()
  c.workdir = "runs/tnt_lm"
  c.docs = False                  # --docs: also copy curves.png to docs/tnt_lm_curves.png
  c.model.d_model, c.model.n_layers, c.model.n_heads = 64, 2, 4
  c.model.n_persistent = 0
  # L = 2048: 4 global chunks, each one local shard; Titans C=8 takes 256 serial chunk steps
  # per layer, TNT 4 + 8 (regimes tried: docs/tnt_lm.md)
  c.data.seq_len = 2048           # L
  c.data.global_batch = 2         # B (4,096 bytes per step)
  c.opt.peak_lr, c.opt.warmup_steps = 2e-3, 30
  # validation loss on the same 4 batches (16,384 bytes) every 32 steps; log_every divides
  # eval_every so each evaluation has the training-step time up to it
  c.train.log_every, c.train.eval_every, c.train.eval_batches = 8, 32, 4
  c.train.ckpt_every = 0
  for fam in ("titans", "tnt"):
    mem = c.model.memory[fam]
    if "momentum" in mem:
      mem.momentum, mem.forget = False, False   # simplified Titans, as in TNT's experiments
      mem.lr_max = 0.02                          # keeps the deep inner loop stable
  # the global memory sums C_G = 512 per-token gradients per step: its stable inner step is
  # ~1/C_G, ten times below the locals' and Titans' bound (docs/tnt_lm.md, seed 1 and L = 4096)
  c.model.memory.tnt.global_lr_max = 0.002

  c.job = mlc.ConfigDict()
  c.job.stage1_steps = 160        # steps for Titans and for TNT stage 1
  c.job.titans_chunk = 8          # Titans chunk size C
  c.job.titans_sweep = ""         # inference chunk sizes evaluated for Titans (comma list)
  c.job.tnt_global_chunk = 512    # C_G
  c.job.tnt_shard_length = 512    # S_L (local memories reset every S_L tokens)
  c.job.tnt_local_chunks = "64"   # stage-1 C_L tuple (comma list)
  c.job.stage2_local_chunks = "8"  # stage-2 C_L tuple, same length
  c.job.stage2_steps = 16         # 10% of stage 1
  c.job.stage2_lr_scale = 0.3     # stage-2 peak lr = scale * opt.peak_lr
  c.job.baseline = "titans"       # the model TNT is compared against
  c.job.tnt_sweep = False         # evaluate TNT at its stage-1 and stage-2 local chunks
  c.job.target_loss = 0.0         # common target validation loss (0: the highest of the
                                  # models' best validation losses, so that all reach it)
  c.job.timing_rounds = 3         # interleaved step timing after training (0 = off) ...
  c.job.timing_steps = 2          # ... of this many steps per model and round
  c.job.compile_cache = True      # persistent XLA cache in workdir/jax_cache (local workdir):
                                  # the interleaved timing reuses the runs' compilations
  # smoke: the wiring end to end (3 tiny runs and their interleaved timing, no compilation
  # cache): its test (run, then --resume) measured 168 s CPU, 171 s wall at load 5.
  if arg == "smoke":
    c.workdir = "runs/tnt_lm_smoke"
    c.model.d_model, c.model.n_heads, c.model.n_layers = 32, 2, 1
    c.data.seq_len, c.data.global_batch, c.data.max_bytes = 32, 8, 60_000
    c.opt.warmup_steps = 1
    c.train.log_every, c.train.eval_every, c.train.eval_batches = 1, 2, 1
    c.train.progress = False
    c.train.plot = False            # per-run loss.png; curves.png is still drawn
    c.job.stage1_steps, c.job.stage2_steps = 3, 2
    c.job.tnt_global_chunk, c.job.tnt_shard_length = 16, 8
    c.job.tnt_local_chunks, c.job.stage2_local_chunks = "4", "2"
    c.job.timing_rounds, c.job.timing_steps = 1, 1
    c.job.compile_cache = False
  elif arg not in (None, ""):
    raise ValueError(f"config argument {arg!r} is unknown; expected '' or 'smoke'")
  return c
