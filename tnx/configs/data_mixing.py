"""Sampling vs loss weights (arXiv 2511.06913): the paper's three experiments at CPU scale and a
byte-level LM on the multi-domain standard-library corpus.

  python -m examples.data_mixing --experiment=fig1      # linear regression (R1, R2, control)
  python -m examples.data_mixing --experiment=fig2      # logistic regression, label noise
  python -m examples.data_mixing --experiment=fig3      # MLP on sklearn digits, noisy domain
  python -m examples.data_mixing --experiment=lm        # byte LM, one corrupted domain
  python -m examples.data_mixing --experiment=fig1 --smoke          # seconds
  python -m examples.data_mixing --config=data_mixing:fig2,smoke    # the same as arguments
  python -m examples.data_mixing --experiment=fig1 --docs   # also copy into docs/

Every value below that the paper does not state is a reproduction choice.
"""

from __future__ import annotations

import ml_collections as mlc

EXPERIMENTS = ("fig1", "fig2", "fig3", "lm")


def get_config(arg: str | None = None) -> mlc.ConfigDict:
  c = mlc.ConfigDict()
  c.experiment = "fig1"           # fig1 | fig2 | fig3 | lm
  c.workdir = "runs/data_mixing"  # results go to <workdir>/<experiment>/
  c.docs = False                  # copy figures and the results table into docs/
  c.seeds = 10                    # Monte Carlo seeds (common random numbers across methods)
  c.base_seed = 0

  # shared loop settings (tnx.mixing.MixingConfig)
  c.mix = mlc.ConfigDict()
  c.mix.batch_size = 32           # B
  c.mix.update_every = 10         # tau: steps between weight updates
  c.mix.ema = 0.1                 # beta of the FGLS / VA running estimates
  c.mix.fgls_init = "one"         # FGLS initial noise estimate: one | first
  c.mix.erma_gamma1 = 0.1
  c.mix.erma_gamma2 = 1.0
  c.mix.erma_g = "constant"       # ERMA G(t): constant | inv_sqrt
  c.mix.probe_size = 32           # VA per-example gradients per domain per update
  c.mix.rounding = "largest_remainder"

  c.fig1 = mlc.ConfigDict()
  c.fig1.d = 10                   # D (the paper's other size: 50)
  c.fig1.n_train = 2000           # per domain
  c.fig1.n_val = 500              # per domain (FGLS's held-out split)
  c.fig1.steps = 5000             # T
  c.fig1.lr_grid = (1e-3, 3e-3, 1e-2, 3e-2)  # step = grid value / sum_i pi_i C_i
  c.fig1.settings = "R1,R2,control"  # R1: C=(1,100) quality; R2: C=(1,100) feature scale

  c.fig2 = mlc.ConfigDict()
  c.fig2.d = 10
  c.fig2.n_train = 2000
  c.fig2.n_val = 500
  c.fig2.n_test = 2000
  c.fig2.steps = 3000
  c.fig2.lr = 0.05                # step = lr / sum_i pi_i C_i
  c.fig2.theta_scale = 3.0        # ||theta*|| (sets how separable the clean labels are)
  c.fig2.settings = "similar,different,different_scaled"

  c.fig3 = mlc.ConfigDict()
  c.fig3.noise = (0.5, 0.8)       # label-noise rates of the noisy domain (one run each)
  c.fig3.hidden = 128
  c.fig3.steps = 1000
  c.fig3.lr = 1e-3                # Adam
  c.fig3.n_val = 100              # per domain
  c.fig3.n_test = 397

  c.lm = mlc.ConfigDict()
  c.lm.steps = 300
  c.lm.methods = "uniform,erma,va,both"
  c.lm.corrupt = "text"           # the domain whose bytes are shuffled within lines
  c.lm.seq_len = 128
  c.lm.global_batch = 16
  c.lm.max_bytes = 400_000        # per domain
  c.lm.d_model = 64
  c.lm.n_layers = 2
  c.lm.peak_lr = 3e-3
  c.lm.eval_batches = 8

  parts = [p for p in (arg or "").split(",") if p]
  for p in parts:
    if p in EXPERIMENTS:
      c.experiment = p
    elif p != "smoke":
      raise ValueError(f"config argument {arg!r}: unknown part {p!r}; expected a comma list of "
                       f"{list(EXPERIMENTS)} and/or 'smoke'")
  if "smoke" in parts:
    apply_smoke(c)
  return c


def apply_smoke(c: mlc.ConfigDict) -> mlc.ConfigDict:
  """Seconds on a CPU: few seeds and steps, small data (numbers are meaningless)."""
  c.workdir = "runs/data_mixing_smoke"
  c.seeds = 2
  c.mix.probe_size = 8
  c.fig1.d, c.fig1.n_train, c.fig1.n_val, c.fig1.steps = 4, 100, 20, 50
  c.fig1.lr_grid = (1e-2, 3e-2)
  c.fig1.settings = "R1"
  c.fig2.n_train, c.fig2.n_val, c.fig2.n_test, c.fig2.steps = 100, 20, 50, 50
  c.fig2.settings = "different"
  c.fig3.noise, c.fig3.hidden, c.fig3.steps, c.fig3.n_val = (0.8,), 8, 30, 20
  c.lm.steps, c.lm.seq_len, c.lm.global_batch, c.lm.max_bytes = 8, 32, 8, 40_000
  c.lm.methods = "both"
  c.lm.d_model, c.lm.eval_batches = 32, 2
  return c
