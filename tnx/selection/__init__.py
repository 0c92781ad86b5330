"""Data selection for fine-tuning: pick the training examples that help a target task most.

Two methods live here, each in its own subpackage:

- `tnx.selection.influence`: Influence Distillation (Nikdan et al., arXiv 2505.19051) --
  per-sample weights from a second-order expansion of the target loss after one optimizer step
  (gradient descent or Adam), made cheap by computing exact gradients only for landmark samples
  and propagating them to the pool with kernel ridge regression on JVP embeddings.
- `tnx.selection.xmas`: XMAS (Naharas et al., arXiv 2510.01454), data selection for
  vision-language fine-tuning from cross-modal alignment trajectories of a small proxy model.

This package module imports nothing, so either method can be used without the other.
"""
