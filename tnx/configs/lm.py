r"""Language-model training on the default corpus (the Python standard library's source).

  python -m tnx.train --config=lm                      # attention baseline, byte level
  python -m tnx.train --config=lm:smoke                # seconds on a CPU
  python -m tnx.train --config=lm --config.model.mixers=titans_mal,swa \
      --config.model.memory.titans.chunk_size=16 --config.workdir=runs/titans
  python -m tnx.train --config=lm --resume             # continue the run in workdir exactly

Dimension letters: B batch, L sequence (data.seq_len), D model width, V vocab (256 bytes).
"""

from __future__ import annotations

import ml_collections as mlc

from tnx.models.config import memory_config_dict
from tnx.train.domains import default_config as domains_config


def get_config(arg: str | None = None) -> mlc.ConfigDict:
  c = mlc.ConfigDict()
  c.seed = 0                      # parameter init and data order
  c.workdir = "runs/lm"           # local path or URL (gs://...): checkpoints, metrics, tb/, plots

  c.model = mlc.ConfigDict()
  c.model.vocab_size = 256        # V: bytes
  c.model.d_model = 64            # D
  c.model.n_layers = 2
  c.model.n_heads = 4             # H; D % H == 0
  c.model.mlp_hidden = 0          # F; 0 = 8/3 D rounded to 8
  c.model.mixers = "attention"    # comma list cycled over layers (tnx.models.MIXERS)
  c.model.window = 64             # sliding window / MAC segment length
  c.model.n_persistent = 4        # Titans persistent memory tokens
  c.model.tie_embeddings = True
  c.model.rope_base = 10000.0
  c.model.dtype = "float32"       # compute dtype; 'bfloat16' on accelerators
  c.model.fp32_softmax_and_loss = True
  c.model.remat = False
  c.model.memory = memory_config_dict()  # per family; None: model.n_heads / kind defaults

  c.data = mlc.ConfigDict()
  c.data.source = "stdlib"        # stdlib | files | mqar | needle
  c.data.path = ""                # file or directory (local or URL); implies source=files
  c.data.allow_binary = False     # train on files that do not look like text
  c.data.suffixes = ".py,.txt,.md"  # files considered in a directory (comma list)
  c.data.val_fraction = 0.02      # share of files (by stable path hash) held out
  c.data.max_bytes = 0            # cap on the corpus read (0 = all)
  c.data.seq_len = 256            # L (packed window length)
  c.data.global_batch = 16        # sequences per step over all hosts; divisible by devices
  c.data.seed = 0                 # shuffle / synthetic-task seed
  c.data.mqar_pairs = 16          # MQAR key-value pairs per sequence
  c.data.mqar_queries = 16        # MQAR queries per sequence
  c.domains = domains_config()    # K data domains with sampling/loss weights (names '' = off)

  c.opt = mlc.ConfigDict()
  c.opt.peak_lr = 3e-3
  c.opt.warmup_steps = 50
  c.opt.final_lr_ratio = 0.1      # cosine ends at peak * ratio
  c.opt.b1 = 0.9
  c.opt.b2 = 0.95
  c.opt.eps = 1e-8
  c.opt.weight_decay = 0.1        # decoupled, on matrices only
  c.opt.no_decay = "embedding"    # comma list of parameter names excluded from decay
  c.opt.clip = 1.0                # global-norm clip (0 = off)

  c.train = mlc.ConfigDict()
  c.train.steps = 1000
  c.train.accum_steps = 1         # microbatches per step (global_batch % accum == 0)
  c.train.log_every = 10
  c.train.eval_every = 250        # 0 = only at the end
  c.train.eval_batches = 8
  c.train.ckpt_every = 250        # 0 = only at the end
  c.train.keep_last = 2           # retention: the newest N checkpoints, plus ...
  c.train.keep_every = 0          # ... every checkpoint at a multiple of K steps (0 = off)
  c.train.keep_best = 0           # ... the best N by best_metric (0 = off; evals each ckpt)
  c.train.best_metric = "eval/loss"  # eval/loss | eval/bits_per_byte | eval/accuracy
  c.train.best_mode = "min"       # min | max
  c.train.resume = False          # --resume: continue the run in workdir exactly
  c.train.resume_step = -1        # --resume_step=N: checkpoint to resume (-1 = newest usable)
  c.train.allow_changes = False   # --allow_changes: resume with a changed config (recorded)
  c.train.nan_lr_scale = 0.5      # on NaN, the suggested resume uses peak_lr * this
  c.train.init_from = ""          # workdir whose latest params initialize this run (stage 2)
  c.train.chunk_sweep = ""        # comma list of chunk sizes evaluated at the end
  c.train.progress = True         # tqdm bar
  c.train.plot = True             # loss curve PNG at the end

  c.mesh = mlc.ConfigDict()
  c.mesh.data = -1                # -1 = all devices left
  c.mesh.fsdp = 1
  c.mesh.context = 1

  if arg == "smoke":
    apply_smoke(c)
  elif arg not in (None, ""):
    raise ValueError(f"config argument {arg!r} is unknown; expected '' or 'smoke'")
  return c


def apply_smoke(c: mlc.ConfigDict) -> mlc.ConfigDict:
  """A tiny variant that runs in seconds on a CPU."""
  c.workdir = "runs/lm_smoke"
  c.model.d_model, c.model.n_layers, c.model.n_heads, c.model.window = 32, 2, 2, 16
  c.data.seq_len, c.data.global_batch, c.data.max_bytes = 64, 8, 200_000
  c.opt.warmup_steps = 2
  c.train.steps, c.train.log_every, c.train.eval_every = 8, 2, 4
  c.train.eval_batches, c.train.ckpt_every = 2, 4
  c.train.progress = False
  return c
