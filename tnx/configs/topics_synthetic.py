"""DP synthetic Topics API data (arXiv 2506.23855) on a generated ground-truth population.

  python -m examples.topics_synthetic                 # full demo (minutes on 2 CPU cores)
  python -m examples.topics_synthetic --smoke         # seconds
  python -m examples.topics_synthetic --docs          # also copy figures/table to docs/
  python -m examples.topics_synthetic --config.fit.num_epochs=1000   # any field

`get_config(arg)`: arg None (full demo) or 'smoke'. Population, epsilons and numbers of types
follow the paper's released pipeline scaled to a CPU (|O| = 50 instead of 469, N = 20,000 real
and synthetic users); the fit's batch, passes and learning rate are demo choices (the
library's defaults, `tnx.privacy.topics.fit.FitConfig`, are the released code's: T = 500,
batch 8,192, 2,000 passes, Adam 1.0). Values marked (choice) are not given by the paper.
"""

from __future__ import annotations

import ml_collections as mlc


def get_config(arg: str | None = None) -> mlc.ConfigDict:
  c = mlc.ConfigDict()
  c.workdir = "runs/topics_synthetic"   # results.json, results.md, plots, release files
  c.docs = False                        # also copy figures and table into docs/
  c.seeds = "0,1,2"                     # one ground-truth population per seed

  c.population = mlc.ConfigDict()       # tnx.privacy.topics.population.PopulationConfig
  c.population.num_users = 20_000       # N real users (choice)
  c.population.num_topics = 50          # |O| (choice; the real taxonomy has 469)
  c.population.num_weeks = 4            # W, as in the release
  c.population.num_communities = 5      # topic blocks (choice)
  c.population.drift = 0.2              # weight of the moving interest (choice)
  c.population.mean_visits = 25.0       # median weekly visits (choice)

  c.api = mlc.ConfigDict()
  c.api.top_k = 5                       # k, Chrome
  c.api.random_topic_prob = 0.05        # p, Chrome

  c.release = mlc.ConfigDict()          # tnx.privacy.topics.stats.ReleaseConfig
  c.release.epsilons = "0.5,1,4,inf"    # user-level epsilon of the statistics
  c.release.delta = 1e-6
  c.release.count_fraction = 0.02       # budget share of the noisy user count (choice)
  c.release.threshold_sigmas = 0.0      # post-processing: zero cells below this * sigma

  c.fit = mlc.ConfigDict()              # tnx.privacy.topics.fit.FitConfig
  c.fit.num_types = "8,32,64"           # T values fitted at every epsilon
  c.fit.batch_size = 4096               # queries per step (choice for the CPU scale)
  c.fit.num_epochs = 200                # passes (choice for the CPU scale)
  c.fit.learning_rate = 0.3             # Adam (choice; 1.0 fits worse at this scale)
  c.fit.init_std = 0.001                # as the released code effectively uses
  c.fit.epochs_per_call = 50            # passes per jitted scan

  c.attack = mlc.ConfigDict()
  c.attack.num_queries = 2000           # queried users per population (choice)
  c.attack.synthetic_users = 0          # synthetic population size; 0 = same as real N

  c.export = mlc.ConfigDict()           # release-format files of one setting
  c.export.epsilon = 1.0
  c.export.num_types = 32
  c.export.tfrecord_users = 1000        # users also written as a TFRecord shard

  if arg == "smoke":
    c.workdir = "runs/topics_synthetic_smoke"
    c.seeds = "0"
    c.population.num_users = 1500
    c.population.num_topics = 20
    c.release.epsilons = "1,inf"
    c.fit.num_types = "4"
    c.fit.batch_size = 1024
    c.fit.num_epochs = 20
    c.fit.epochs_per_call = 10
    c.attack.num_queries = 200
    c.export.num_types = 4
    c.export.tfrecord_users = 50
  elif arg is not None:
    raise ValueError(f"topics_synthetic config arg must be None or 'smoke', got {arg!r}")
  return c
