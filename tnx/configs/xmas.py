"""XMAS on ShapesVQA (arXiv 2510.01454 at CPU scale): proxy fine-tuning with checkpoints,
alignment trajectories, selection by XMAS, baselines and ablations, target training on every
subset, per-family accuracy and average relative performance (ARP) against the full pool.

  python -m examples.xmas                      # ~30-40 min on a busy 2-core CPU
  python -m examples.xmas --smoke              # tiny models, seconds to a minute
  python -m examples.xmas --config.experiment.seeds=1 --config.experiment.budgets=0.1,0.2
  python -m examples.xmas --docs               # also copy the figure and table into docs/

Scale (reduced from the paper's demonstration plan for a shared 2-core machine): a pool of
5,000 generated items plus paraphrased duplicates (about 6,600), a 2-layer D=32 proxy and a
2-layer D=64 target (instead of D=64 / 4-layer D=128), 2 target epochs.
"""

from __future__ import annotations

import ml_collections as mlc

METHODS = ("random,oracle,el2n,embed_cluster,xmas,xmas_random_within,xmas_unstable_first,"
           "xmas_last_checkpoint")


def _train(epochs: int, lr: float, warmup: int, final_ratio: float) -> mlc.ConfigDict:
  return mlc.ConfigDict(dict(
      epochs=epochs,              # passes over the (sub)set
      batch_size=64,              # B
      lr=lr,                      # peak Adam learning rate
      warmup_steps=warmup,        # linear warmup steps
      final_lr_ratio=final_ratio,  # cosine decay to lr * ratio (1 = constant)
      weight_decay=0.0,           # AdamW decay of matrices
      clip=1.0))                  # global-norm gradient clip (0 = off)


def get_config(arg: str | None = None) -> mlc.ConfigDict:
  c = mlc.ConfigDict()
  c.workdir = "runs/xmas"          # everything is written here
  c.seed = 0                       # proxy init/data order; experiment seeds fold into it
  c.docs = False                   # --docs: copy figure and table into docs/
  c.train = mlc.ConfigDict()
  c.train.resume = False           # --resume: reuse values.npz, skip runs in runs.jsonl

  c.data = mlc.ConfigDict()
  c.data.pool_size = 5000          # generated items before the paraphrased duplicates
  c.data.test_per_family = 200     # balanced test set: items per family
  c.data.seed = 0                  # pool seed (the test set uses seed + 1)
  c.data.density = 0.4             # probability that a grid cell holds a shape
  c.data.noise = 0.1               # std of the patch-feature noise
  c.data.image_dim = 32            # width of the frozen vision tower's output
  c.data.position_code = "linear"  # patch position code: 'linear' (r, c)/3 or 'onehot'
  c.data.dup_fraction = 0.2        # share of exists-items duplicated 3-5x with paraphrases

  c.stage1 = mlc.ConfigDict()
  c.stage1.num_items = 20000       # caption items `describe r c` (0 = no stage-1 alignment)
  c.stage1.seed = 7                # caption data seed
  c.stage1.train = _train(1, 3e-3, 20, 0.1)   # one epoch, before instruction tuning

  c.proxy = mlc.ConfigDict()
  c.proxy.d_model, c.proxy.n_layers, c.proxy.n_heads = 32, 2, 4   # proxy decoder
  c.proxy.train = _train(1, 1e-3, 0, 1.0)   # 1 epoch, constant Adam 1e-3 (the paper's proxy)
  c.proxy.num_checkpoints = 7      # T + 1 evenly spaced checkpoints, step 0 included

  c.target = mlc.ConfigDict()
  c.target.d_model, c.target.n_layers, c.target.n_heads = 64, 2, 4  # target decoder
  c.target.train = _train(2, 3e-3, 5, 0.1)  # 2 epochs, warmup 5 steps, cosine to 0.1

  c.xmas = mlc.ConfigDict()
  c.xmas.mode = "text_to_image"    # attention block: 'text_to_image' or 'reference'
  c.xmas.top_k = 5                 # K singular values per checkpoint
  c.xmas.trajectory = "sum"        # 'sum' (scalar per checkpoint) or 'values' (K each)
  c.xmas.num_clusters = 25         # k-means clusters C (0 = max(8, N/200))
  c.xmas.kmeans_iters = 100        # Lloyd iterations
  c.xmas.min_cluster_size = 3      # clusters with <= 2 members are never sampled
  c.xmas.batch_size = 64           # pool examples per streamed batch

  c.experiment = mlc.ConfigDict()
  c.experiment.budgets = "0.1,0.2,0.3,0.5"   # fractions of the pool
  c.experiment.seeds = 3                     # selection + target seeds per method
  c.experiment.methods = METHODS             # comma list (see examples/xmas.py)

  if arg == "smoke":
    c.workdir = "runs/xmas_smoke"
    c.data.pool_size, c.data.test_per_family, c.data.image_dim = 150, 8, 8
    c.stage1.num_items = 64
    c.stage1.train = _train(1, 1e-2, 0, 1.0)
    c.stage1.train.batch_size = 32
    c.proxy.d_model, c.proxy.n_layers, c.proxy.n_heads = 16, 1, 2
    c.proxy.num_checkpoints = 3
    c.proxy.train = _train(1, 1e-2, 0, 1.0)
    c.proxy.train.batch_size = 32
    # Stage 1, proxy and target share one shape and optimizer: one compilation for all runs.
    c.target.d_model, c.target.n_layers, c.target.n_heads = 16, 1, 2
    c.target.train = _train(1, 1e-2, 0, 1.0)
    c.target.train.batch_size = 32
    c.xmas.num_clusters, c.xmas.kmeans_iters, c.xmas.batch_size = 4, 20, 32
    c.experiment.budgets, c.experiment.seeds = "0.2,0.5", 1
  elif arg not in (None, ""):
    raise ValueError(f"config argument {arg!r} is unknown; expected '' or 'smoke'")
  return c
