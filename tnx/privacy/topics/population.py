"""A generated ground-truth population of browsing histories with communities and drift.

Real Topics API data is not public; this stands in for it in tests and demonstrations. The
structure makes pair statistics non-trivial:

* topic popularity follows a Zipf law, and topics are split into `num_communities` blocks;
  a user belongs to one community whose block is `community_boost` times more likely;
* each user has a persistent interest vector lambda_u ~ Dirichlet(concentration * prior_c);
* week w's visits are v_{u,w,t} ~ Poisson(V_u ((1 - drift) lambda_u + drift d_{u,w})), where
  d_{u,w} is a slowly moving interest (an AR(1) mix of fresh Dirichlet draws), so week-to-week
  stability is imperfect;
* the visit volume V_u is log-normal, so light users with fewer than k visited topics exist
  and the API's random padding is exercised.

Dimension letters: N users, W weeks, O topics, C communities.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from tnx import validation
from tnx.privacy.topics import api


@dataclasses.dataclass(frozen=True)
class PopulationConfig:
  num_users: int = 20_000
  num_topics: int = 50
  num_weeks: int = 4
  num_communities: int = 5
  zipf_exponent: float = 1.1        # popularity prior ~ rank^-s
  community_boost: float = 8.0      # weight of a user's own community block
  concentration: float = 10.0       # Dirichlet total concentration of interests
  drift: float = 0.2                # rho: weight of the moving interest
  drift_persistence: float = 0.6    # AR(1) coefficient of the moving interest
  mean_visits: float = 25.0         # median weekly visits V_u
  visits_log_std: float = 0.8       # log-normal spread of V_u

  def __post_init__(self):
    for f in ("num_users", "num_topics", "num_weeks", "num_communities"):
      validation.positive_int(f, getattr(self, f))
    for f in ("zipf_exponent", "community_boost", "concentration", "mean_visits"):
      validation.positive(f, getattr(self, f))
    validation.in_range("drift", self.drift, 0.0, 1.0)
    validation.in_range("drift_persistence", self.drift_persistence, 0.0, 1.0)
    validation.non_negative("visits_log_std", self.visits_log_std)


@dataclasses.dataclass(frozen=True)
class Population:
  """visits_NxWxO: weekly visit counts; community_N: each user's community;
  prior_CxO: community topic priors."""
  visits_NxWxO: np.ndarray
  community_N: np.ndarray
  prior_CxO: np.ndarray


def generate(seed: int, cfg: PopulationConfig) -> Population:
  """Draws a population (numpy Generator seeded with `seed`)."""
  rng = np.random.default_rng(seed)
  n, o, w, c = cfg.num_users, cfg.num_topics, cfg.num_weeks, cfg.num_communities
  popularity = 1.0 / np.arange(1, o + 1) ** cfg.zipf_exponent
  block = rng.permutation(o) % c                        # topic -> community block
  boost = np.where(block[None, :] == np.arange(c)[:, None], cfg.community_boost, 1.0)
  prior = popularity[None, :] * boost
  prior /= prior.sum(axis=1, keepdims=True)
  community = rng.integers(0, c, n)
  alpha_NxO = cfg.concentration * prior[community]
  interest = rng.gamma(alpha_NxO)                       # Dirichlet via normalised gammas
  interest /= interest.sum(axis=1, keepdims=True)
  volume = cfg.mean_visits * np.exp(cfg.visits_log_std * rng.standard_normal(n))
  moving = interest.copy()
  visits = np.empty((n, w, o), np.int32)
  for week in range(w):
    fresh = rng.gamma(alpha_NxO)
    fresh /= fresh.sum(axis=1, keepdims=True)
    moving = cfg.drift_persistence * moving + (1 - cfg.drift_persistence) * fresh
    rate = volume[:, None] * ((1 - cfg.drift) * interest + cfg.drift * moving)
    visits[:, week] = rng.poisson(rate)
  # Every user must have at least one visit (the API has nothing to report otherwise).
  idle = ~(visits > 0).any(axis=(1, 2))
  visits[idle, 0, np.argmax(interest[idle], axis=1)] = 1
  return Population(visits, community, prior)


def topic_sets(seed: int, cfg: PopulationConfig, top_k: int = 5) -> tuple[jax.Array, Population]:
  """The population's weekly top-k sets [N, W, k] (API tie-breaks and padding) and itself."""
  pop = generate(seed, cfg)
  sets = api.top_topics(jax.random.PRNGKey(seed), pop.visits_NxWxO, top_k)
  return sets, pop
