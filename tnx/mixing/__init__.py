"""Sampling weights vs loss weights in multi-domain training (arXiv 2511.06913).

  weights     loss weights: validation, GLS optimum, one-shot FGLS, ERMA
  sampling    stratified mini-batch, its variance, VA (Neyman) allocation and rounding, slots
  linreg      the multi-domain linear-regression model (readings R1/R2) and its closed forms
  pools       per-domain padded example pools, train/validation splits
  loop        the optax loop with per-domain sampling and loss weights updated during training
  tasks       logistic (label noise) and digits-MLP domains for the classification experiments
  montecarlo  vmapped Monte Carlo over seeds and settings
"""

from tnx.mixing.loop import Loop, LoopState, MixingConfig, MixState, fit, nnx_loss
from tnx.mixing.pools import Pools, from_domains

__all__ = ["Loop", "LoopState", "MixState", "MixingConfig", "Pools", "fit", "from_domains",
           "nnx_loss"]
