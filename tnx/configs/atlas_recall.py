"""Recall of trained memory LMs (Titans, OmegaNet, Atlas, DeepTransformer) at equal parameter
count on multi-query associative recall (MQAR) with a growing number of pairs and on a
single needle in haystacks of growing length (docs/atlas.md).

  python -m examples.atlas_recall                 # ~45 min on a loaded 2-core CPU (Atlas: 3/4)
  python -m examples.atlas_recall --smoke         # the wiring end to end: 2.5 min (compiles)
  python -m examples.atlas_recall --config.job.pairs=4,16 --config.train.steps=400
  python -m examples.atlas_recall --resume        # finish an interrupted job
  python -m examples.atlas_recall --docs          # also copy the figure to docs/

Every model is a pure memory LM (each layer's token mixer is the memory). The memories share
one fast-weight shape: a 2-layer MLP of hidden width `expansion * head_dim` (1 x 16 here, 4 in
the paper's Eq. 42; 4 makes Atlas's Muon step 4x dearer, beyond this CPU budget). The ATLAS
variants lift keys/queries with the degree-2 polynomial map in its sketched form (D = 1 + K +
sketch_dim = 49 for K = 16; exact Kronecker features, D = 273, cost 6x the step time).
Parameters are matched by the outer MLP width F of the models below the largest one.
"""

from __future__ import annotations

import ml_collections as mlc

from tnx.configs import lm


def get_config(arg: str | None = None) -> mlc.ConfigDict:
  c = lm.get_config()
  c.workdir = "runs/atlas_recall"
  c.docs = False                  # --docs: also copy atlas_recall.png into docs/
  c.model.d_model, c.model.n_layers, c.model.n_heads = 64, 2, 4
  c.model.n_persistent = 0        # pure memory LMs, no persistent tokens
  c.model.memory.titans.memory.expansion = 1
  c.model.memory.atlas.memory.expansion = 1
  c.model.memory.atlas.poly_mode = "sketch"
  c.model.memory.atlas.sketch_dim = 32
  # V = 64: MQAR keys from [2, 32), values from [32, 64) (chance 1/32); needle values from
  # [48, 64) (chance 1/16). With V = 256 Titans stays at chance after 200 steps.
  c.model.vocab_size = 64
  c.data.seq_len = 64             # L of every MQAR run and of needle training
  c.data.global_batch = 8
  c.data.mqar_queries = 8         # queries per MQAR sequence (2 pairs + 2 queries <= L + 1)
  c.opt.peak_lr, c.opt.warmup_steps = 3e-3, 20
  c.train.steps = 300
  c.train.log_every, c.train.eval_every, c.train.eval_batches = 20, 0, 8
  c.train.ckpt_every = 0
  c.train.progress = False
  c.train.plot = False

  c.job = mlc.ConfigDict()
  # model names from examples.atlas_recall.MODELS (each a change to the model section)
  c.job.models = "titans,omeganet,deep_transformer,atlas"
  c.job.match_to = ""             # models whose largest count all are matched to ("": job.models)
  c.job.seeds = "0"               # init seeds, one run per model, task and seed (comma list)
  c.job.reuse_only = False        # train nothing: tabulate the finished runs (with --resume)
  c.job.pairs = "4,8,16,24"       # MQAR key-value pairs per sequence, one run per count
  c.job.needle_lengths = "32,64,128,256"  # needle evaluated at these L (trained at seq_len)
  # inner step bounds per ATLAS variant (variant:lr_max, comma list), over the variant's
  # default: OmegaNet's 0.1 gave a non-finite step within 5-44 steps in all five runs of
  # an attempt at L = 96 (docs/atlas.md); 0.01 is the Titans default
  c.job.atlas_lr_max = "omeganet:0.01"
  c.job.nan_retries = 1           # after a non-finite step: start again at peak_lr x
                                  # train.nan_lr_scale (the trainer's recovery), this often
  c.job.compile_cache = True      # persistent XLA cache in workdir/jax_cache: the runs of one
                                  # model differ only in data, so they compile once
  c.job.figure = "atlas_recall.png"  # under workdir (and docs/ with --docs)
  c.job.title = "Trained memory LMs at equal parameter count: recall"
  if arg == "smoke":
    c.workdir = "runs/atlas_recall_smoke"
    c.model.d_model, c.model.n_layers, c.model.n_heads = 32, 1, 2
    c.model.memory.atlas.sketch_dim = 8
    c.data.seq_len, c.data.mqar_queries = 32, 4
    c.opt.warmup_steps = 1
    c.train.steps, c.train.log_every, c.train.eval_batches = 2, 1, 1
    c.job.models = "titans,atlas"
    c.job.pairs = "2"
    c.job.needle_lengths = "16,32"
    c.job.compile_cache = False     # process-wide in JAX: not in tests
  elif arg not in (None, ""):
    raise ValueError(f"config argument {arg!r} is unknown; expected '' or 'smoke'")
  return c
