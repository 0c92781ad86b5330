"""In-context weight prediction and test-time scaling (arXiv 2510.03605, "Understanding the
Role of Training Data in Test-Time Scaling").

  task        covariances, prompt sampling, task mixtures, the (2d+2) x (n+1) embedding
  lsa         one-layer linear self-attention, its sparse structure and trained optimum
  cot         test-time CoT: appended columns (fixed buffer + mask) and the looped query
              column, lax.scan over steps, vmap over prompts and seeds
  theory      closed forms: Gamma, errors after k steps (m = inf, finite m), hardness, the
              Cor. 3.5 bound, overthinking factors and k*
  selection   the convex task-selection program (SLSQP and optax projected gradient)
  train_lsa   LSA training with optax on fresh prompts
  gpt         a small GPT-style transformer from tnx's blocks, CoT by appending predictions

Dimension letters: B prompts, N / M examples per training / test prompt, D = d features,
E = 2d + 2 embedding rows, L columns or tokens, K CoT steps, T task families.
"""

from tnx.icl import cot, lsa, selection, task, theory, train_lsa

__all__ = ["cot", "lsa", "selection", "task", "theory", "train_lsa"]
