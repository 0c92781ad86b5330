"""Influence Distillation (arXiv 2505.19051): the exact sandbox and end-to-end LM selection.

  python -m examples.influence_distillation --experiment=sandbox     # exact maths (minutes)
  python -m examples.influence_distillation --experiment=lm          # tnx LM, 3 targets x 3 seeds
  python -m examples.influence_distillation --experiment=lm --smoke  # seconds
  python -m examples.influence_distillation --experiment=lm --config.lm.k=128   # any field
  python -m examples.influence_distillation --experiment=sandbox --docs  # figures -> docs/

`get_config(arg)`: arg None (full sizes), 'smoke' (CPU seconds), 'sandbox' or 'lm' to
preselect the experiment ('lm,smoke' combines). Values marked (choice) are not given by the
paper; the sizes are scaled down from the paper's (Tulu V2 pool of 200k, 7B models) so that the
whole run takes minutes on a 2-core CPU.
"""

from __future__ import annotations

import ml_collections as mlc

EXPERIMENTS = ("sandbox", "lm")


def get_config(arg: str | None = None) -> mlc.ConfigDict:
  c = mlc.ConfigDict()
  c.experiment = "sandbox"        # sandbox | lm
  c.workdir = "runs/influence_distillation"  # outputs go to <workdir>/<experiment>/
  c.docs = False                  # also copy figures and tables into docs/ (never in smoke)
  c.seed = 0                      # base seed (data, model init, landmarks)

  # Exact sandbox: synthetic domains, a 16-32-4 MLP, every gradient and the Hessian exact.
  s = c.sandbox = mlc.ConfigDict()
  s.dim, s.hidden, s.num_classes = 16, 32, 4
  s.num_domains, s.per_domain = 8, 500    # pool n = 4000
  s.target_size, s.heldout_size = 64, 2000
  s.warm_steps = 100              # AdamW warm-up steps on random pool batches (choice)
  s.warm_batch = 64
  s.warm_lr = 1e-2                # peak lr of the warm-up (tnx.train.optim schedule)
  s.b2 = 0.95                     # Adam second-moment decay (tnx default)
  s.k = 200                       # budget: 5% of the pool
  s.taylor_lrs = "1.0,0.3,0.1,0.03,0.01,0.003"  # lr sweep of the Taylor check (x warm lr for Adam)
  s.train_steps = 30              # real Adam steps from the warm state on each selection
  s.order_lrs = "0.01,0.1,1.0,3.0"  # lr of the modelled step: first vs second order
  s.qp_steps = 400                # FISTA iterations per QP solve (warm-started)
  s.lambda_points = 40            # lambda grid of the sparsity curve
  s.landmark_counts = "16,32,64,128,256,512,1024,2048,4000"
  s.landmark_seeds = 5
  s.damps = "1e-2,1e-6"           # relative KRR damping: the paper code's and a small one
  s.jvp_tangents = 2              # JVP embeddings of the hidden layer: 2 x 32 dims
  s.noise_levels = "0.01,0.03,0.1,0.3"  # std (x rms gradient) injected into landmark grads
  s.noise_lambdas = "0.1,1.0"     # lambda of the weights in the noise check

  # End-to-end: tnx LM on the generated multi-task pool (tnx.selection.influence.minitulu).
  lm = c.lm = mlc.ConfigDict()
  lm.seeds = "0,1,2"              # model init, warm-up data, landmarks, fine-tune order
  lm.targets = "arith2,kv,fact_mc"  # GSM8k-, SQuAD- and MMLU-like
  lm.pool_size = 4000
  lm.seq_len = 40
  lm.target_size = 32             # target examples given to the selectors
  lm.heldout_size = 512           # target examples for evaluation
  lm.eval_batch = 64
  lm.model = mlc.ConfigDict(dict(vocab_size=256, d_model=64, n_layers=4, n_heads=4,
                                 mlp_hidden=0, mixers="attention", window=64,
                                 n_persistent=4, tie_embeddings=True, rope_base=10000.0,
                                 dtype="float32", fp32_softmax_and_loss=True, remat=False))
  lm.warm_fraction = 0.1          # warm-up on a random 10% of the pool (choice)
  lm.warm_steps = 300
  lm.warm_batch = 32
  lm.warm_opt = _opt(3e-3, 30)
  lm.k = 200                      # selected examples: 5% of the pool
  lm.finetune_epochs = 2          # over the k selected examples, from the warm-up weights
  lm.finetune_batch = 16
  lm.finetune_opt = _opt(1e-3, 3)
  lm.methods = "uniform,mid_ppl,embed_sim,exact,influence,influence_rr"
  lm.ppl_center = 0.5             # perplexity band centred on the median (Mid-PPL)
  lm.num_landmarks = 256          # l (paper: 4096 of 200k)
  lm.landmarks = "random"
  lm.jvp_blocks = 1               # first K_b of the 4 blocks (paper: 4 of 32)
  lm.jvp_tangents = 2             # r (paper: 2)
  lm.jvp_dim = 0                  # projection of the r * D JVPs (0 = keep all 128)
  lm.kernel = "rbf"
  lm.damp = 1e-2
  lm.grad_subset = "down"         # gradients over params whose path names this (MLP out)
  lm.sketch = "srht"              # gradient sketch (paper code: randomized Hadamard)
  lm.sketch_dim = 2048
  lm.normalize = True             # cosine scores, as the authors' code (paper: unconfirmed)
  lm.target_mode = "mean"         # mean target gradient (paper) | round_robin (code)
  lm.chunk_size = 32

  if arg:
    parts = [a.strip() for a in arg.split(",") if a.strip()]
    for p in parts:
      if p in EXPERIMENTS:
        c.experiment = p
      elif p == "smoke":
        apply_smoke(c)
      else:
        raise ValueError(f"config argument {p!r} is unknown; expected 'smoke', 'sandbox' or "
                         "'lm' (comma-separated)")
  return c


def _opt(peak_lr: float, warmup: int) -> mlc.ConfigDict:
  """tnx.train.optim settings (AdamW, warm-up + cosine, clip 1, decay on matrices)."""
  return mlc.ConfigDict(dict(peak_lr=peak_lr, warmup_steps=warmup, final_lr_ratio=0.1,
                             b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1,
                             no_decay=("embedding",), clip=1.0))


def apply_smoke(c: mlc.ConfigDict) -> mlc.ConfigDict:
  """Tiny sizes that run in seconds on a CPU (outputs under <workdir>_smoke)."""
  c.workdir = "runs/influence_distillation_smoke"
  s = c.sandbox
  s.dim, s.hidden, s.num_classes, s.num_domains, s.per_domain = 6, 8, 3, 4, 30
  s.target_size, s.heldout_size, s.warm_steps, s.warm_batch, s.k = 8, 40, 5, 16, 12
  s.taylor_lrs, s.order_lrs, s.train_steps, s.qp_steps = "0.1,0.03,0.01", "0.1,1.0", 3, 100
  s.lambda_points, s.landmark_counts, s.landmark_seeds = 8, "8,32,120", 2
  s.noise_levels, s.noise_lambdas = "0.1,0.3", "1.0"
  lm = c.lm
  lm.seeds, lm.targets, lm.pool_size = "0", "kv", 96
  lm.target_size, lm.heldout_size, lm.eval_batch = 8, 32, 32
  lm.model.d_model, lm.model.n_layers, lm.model.n_heads = 16, 1, 2
  lm.warm_steps, lm.warm_batch, lm.warm_fraction = 3, 8, 0.5
  lm.warm_opt.warmup_steps, lm.finetune_opt.warmup_steps = 1, 1
  lm.k, lm.finetune_epochs, lm.finetune_batch = 16, 1, 8
  lm.num_landmarks, lm.sketch_dim, lm.chunk_size = 24, 64, 16
  return c
