"""Test-time scaling for in-context weight prediction (arXiv 2510.03605): experiments E1-E4.

  python -m examples.icl_scaling --experiment=E1      # LSA: CoT steps vs training context
  python -m examples.icl_scaling --experiment=E2      # LSA: overthinking under mismatch
  python -m examples.icl_scaling --experiment=E3      # small GPT: monotone vs U-shaped
  python -m examples.icl_scaling --experiment=E4      # task selection over four families
  python -m examples.icl_scaling --experiment=E2 --smoke            # seconds
  python -m examples.icl_scaling --experiment=E1 --config.e1.m=400  # any field
  python -m examples.icl_scaling --experiment=E3 --docs             # also copy figures to docs/

`get_config(arg)`: arg None (full sizes), 'smoke' (CPU seconds), or 'E1'..'E4' to preselect
the experiment ('E2,smoke' combines). Values marked (choice) are not given by the paper.
"""

from __future__ import annotations

import ml_collections as mlc

EXPERIMENTS = ("E1", "E2", "E3", "E4")


def get_config(arg: str | None = None) -> mlc.ConfigDict:
  c = mlc.ConfigDict()
  c.experiment = "E1"             # which experiment to run: E1, E2, E3 or E4
  c.workdir = "runs/icl_scaling"  # outputs go to <workdir>/<experiment>/
  c.docs = False                  # also copy the figures into docs/ (never in smoke runs)
  c.seed = 0                      # base seed; every experiment derives its keys from it

  # E1: in-distribution scaling, LSA at the closed-form optimum and trained.
  c.e1 = mlc.ConfigDict()
  c.e1.d = 10                     # feature dimension d
  c.e1.spectra = "iso,power1"     # Lambda = Sigma: 'iso' (I) or 'powerA' (j^-A, tr = d)
  c.e1.ns = "10,20,30"            # training context lengths n
  c.e1.m = 200                    # test examples per prompt (Monte Carlo)
  c.e1.k_max = 30                 # CoT steps k = 1..k_max
  c.e1.seeds = 10                 # Monte Carlo seeds
  c.e1.prompts = 2000             # test prompts per seed
  c.e1.train = True               # also train an LSA per (spectrum, n) and evaluate it
  c.e1.train_steps = 10000        # optax steps on fresh prompts (20k doubles the CPU time)
  c.e1.train_batch = 64           # prompts per step
  c.e1.train_lr = 1e-3            # peak learning rate
  c.e1.train_optimizer = "adam"   # 'adam' or 'sgd'
  c.e1.train_schedule = "cosine"  # 'cosine' (to 0) or 'constant' (choice)
  c.e1.contour_ns = "5,10,15,20,25,30,35,40"  # n grid of the iso-error contours
  c.e1.contour_eps = "1.0,0.1,0.01"           # error levels of the contours

  # E2: overthinking, skewed training / isotropic test.
  c.e2 = mlc.ConfigDict()
  c.e2.d = 20                     # feature dimension
  c.e2.alpha = 1.0                # training spectrum lambda_j ~ j^-alpha, tr Lambda = d
  c.e2.ns = "60,100,150,200"      # training contexts n
  c.e2.k_max = 40                 # CoT steps
  c.e2.m = 200                    # test examples of the Monte Carlo check
  c.e2.seeds = 5                  # Monte Carlo seeds
  c.e2.prompts = 1000             # prompts per seed
  c.e2.train = True               # train an LSA per n and evaluate its learned preconditioner
  c.e2.train_steps = 20000
  c.e2.train_batch = 64
  c.e2.train_lr = 0.02
  c.e2.train_optimizer = "sgd"
  c.e2.train_schedule = "cosine"

  # E3: small GPT (the paper: GPT-2, 12 layers, 8 heads, width 256; here CPU-sized).
  c.e3 = mlc.ConfigDict()
  c.e3.d = 5                      # feature dimension
  c.e3.alpha = 1.3                # training spectrum j^-alpha, tr = d (choice: the LSA theory
                                  # then predicts a U-shape at n = 30 and none at n = 10, 20)
  c.e3.ns = "10,20,30"            # training contexts n
  c.e3.m_test = 0                 # test examples per prompt (0: the model's training n)
  c.e3.k_max = 20                 # CoT steps at test time
  c.e3.eval_prompts = 1000        # test prompts per curve
  c.e3.d_model = 32               # transformer width D (GPT-2 in the paper: 256)
  c.e3.n_layers = 3               # blocks (paper: 12)
  c.e3.n_heads = 2                # heads (paper: 8)
  c.e3.mlp_hidden = 0             # 0: 8/3 D
  c.e3.steps = 2000               # optax steps (20k would take hours on a 2-core CPU)
  c.e3.batch = 64                 # prompts per step
  c.e3.start = "random"           # 'zero' or 'random' starting estimates in training
  c.e3.start_scale = 1.0          # std of random starting estimates
  c.e3.train_cot = 1              # estimate tokens per training prompt (1: no CoT in training)
  c.e3.log_every = 100            # steps between metric records
  c.e3.opt = mlc.ConfigDict()     # tnx.train.optim.make_optimizer fields
  c.e3.opt.peak_lr = 1e-3
  c.e3.opt.warmup_steps = 100
  c.e3.opt.final_lr_ratio = 0.1
  c.e3.opt.b1 = 0.9
  c.e3.opt.b2 = 0.999
  c.e3.opt.eps = 1e-8
  c.e3.opt.weight_decay = 0.0
  c.e3.opt.clip = 1.0
  c.e3.opt.no_decay = ()

  # E4: task selection over four families (alpha, B): lambda_j = j^-alpha for j <= B, else 0.
  c.e4 = mlc.ConfigDict()
  c.e4.d = 100                    # feature dimension (the longest family's support)
  c.e4.families = "Easy-Short:0.2:20,Hard-Short:0.8:20,Easy-Long:0.2:100,Hard-Long:0.8:100"
  c.e4.random_targets = 50        # targets Sigma = diag(j^-a), a ~ U[a_lo, a_hi] (choice)
  c.e4.target_alpha = "0.2,1.0"   # a_lo, a_hi
  c.e4.n = 200                    # training context for the test-error check of a selection
  c.e4.ks = "1,5,20"              # CoT steps reported in that check
  c.e4.pgd_steps = 20000          # projected-gradient iterations

  experiments, smoke = _parse(arg)
  if experiments:
    c.experiment = experiments[0]
  if smoke:
    c.workdir = "runs/icl_scaling_smoke"
    c.e1.d, c.e1.ns, c.e1.m, c.e1.k_max = 4, "5,10", 20, 4
    c.e1.spectra = "power1"
    c.e1.seeds, c.e1.prompts, c.e1.train_steps, c.e1.train_batch = 2, 50, 40, 16
    c.e1.contour_ns = "5,10"
    c.e2.d, c.e2.ns, c.e2.k_max, c.e2.m = 6, "20,60", 8, 20
    c.e2.seeds, c.e2.prompts, c.e2.train_steps, c.e2.train_batch = 2, 20, 40, 16
    c.e3.d, c.e3.ns, c.e3.k_max, c.e3.eval_prompts = 3, "4", 3, 16
    c.e3.d_model, c.e3.n_layers, c.e3.n_heads = 16, 1, 2
    c.e3.steps, c.e3.batch, c.e3.log_every = 4, 8, 2
    c.e3.opt.warmup_steps = 1
    c.e4.d = 10
    c.e4.families = "Easy-Short:0.2:4,Hard-Short:0.8:4,Easy-Long:0.2:10,Hard-Long:0.8:10"
    c.e4.random_targets, c.e4.n, c.e4.pgd_steps = 3, 20, 5000
  return c


def _parse(arg: str | None) -> tuple[list[str], bool]:
  tokens = [t.strip() for t in (arg or "").split(",") if t.strip()]
  smoke = "smoke" in tokens
  experiments = [t for t in tokens if t != "smoke"]
  for t in experiments:
    if t not in EXPERIMENTS:
      raise ValueError(f"config argument {arg!r}: unknown token {t!r}; expected 'smoke' or one "
                       f"of {list(EXPERIMENTS)}")
  return experiments, smoke
