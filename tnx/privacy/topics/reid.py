"""Re-identification of users across two sites from their Topics API traces.

Threat model of Carey et al. ("Measuring Re-identification Risk", arXiv 2304.07210), used by
arXiv 2506.23855 (Sec. 6) to validate the synthetic data: two unrelated sites observe the same
population for R epochs; the attacker holds the site-1 traces of all N users and the site-2
trace of one user and names the site-1 user whose trace scores highest.

A trace is the per-epoch topic a site was given (`api.site_topics`), as in prior work. A site
calling once a week sees each epoch in 3 calls (the (site, epoch) draw is fixed); when a call's
de-duplicated list hides a repeat, the new epoch's topic is one it already holds, which this
attacker is assumed to resolve.

Score ("asymmetric weighted Hamming"): with q_in = (1-p)/k + p/|O|, q_out = p/|O|, and
pi_t the estimated share of users whose set holds topic t,
  pi_t = (c_t / (N R) - q_out) / (q_in - q_out)   from site-1 topic counts c_t (clipped to
                                                  [0, 1]: an estimate, not an input),
  A_t = q_out + (q_in - q_out) q_in pi_t / (q_out + (q_in - q_out) pi_t)
        (site 2 shows t given site 1 showed t for the same user and epoch),
  B_t = q_out + (q_in - q_out) (k - 1) pi_t / (k - pi_t)
        (site 2 shows t given site 1 showed another topic),
  score(u, v) = sum_r log A_{t_r} if site1_r(v) = t_r else log B_{t_r},   t_r = site2_r(u).
Only the matches depend on v, so scores are ranked by sum_r [match] (log A - log B)_{t_r}.
Ties are broken uniformly at random in expectation: a query counts 1 / (number of targets
tied at the top) when the true user is among them.

Dimension letters: N users (targets), Q queries, R epochs, O topics.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from tnx import validation
from tnx.privacy.topics.api import APIConfig


def attack_weights(site1_NxR, cfg: APIConfig) -> tuple[np.ndarray, np.ndarray]:
  """(log A_t, log B_t), each [O], estimated from the site-1 traces of all targets."""
  t = np.asarray(site1_NxR)
  if t.ndim != 2 or t.size == 0:
    raise ValueError(f"site1 traces must have shape [N, R], got {t.shape}")
  validation.array_in_range("site1 traces", t, 0, cfg.num_topics - 1)
  q_in, q_out, k = cfg.q_in, cfg.q_out, cfg.top_k
  if q_in <= q_out:
    # p = 1: every shown topic is random, so no topic carries information.
    return np.zeros(cfg.num_topics), np.zeros(cfg.num_topics)
  rate = np.bincount(t.ravel(), minlength=cfg.num_topics) / t.size
  pi = np.clip((rate - q_out) / (q_in - q_out), 0.0, 1.0)
  a = q_out + (q_in - q_out) * q_in * pi / (q_out + (q_in - q_out) * pi)
  b = q_out + (q_in - q_out) * (k - 1) * pi / (k - pi)
  return np.log(a), np.log(b)


@functools.partial(jax.jit, static_argnames=("chunk",))
def _rates(site1_NxR, site2_QxR, truth_Q, gain_O, chunk: int):
  def one_query(args):
    query_R, true_index = args
    match_NxR = site1_NxR == query_R[None, :]
    score_NxR = jnp.cumsum(jnp.where(match_NxR, gain_O[query_R][None, :], 0.0), axis=1)
    best = jnp.max(score_NxR, axis=0)
    tied = jnp.sum(score_NxR == best[None, :], axis=0)
    hit = score_NxR[true_index] == best
    return jnp.where(hit, 1.0 / tied, 0.0)

  return jax.lax.map(one_query, (site2_QxR, truth_Q), batch_size=chunk)   # [Q, R]


def reidentification_rates(key: jax.Array, site1_NxR, site2_NxR, cfg: APIConfig,
                           num_queries: int | None = None, chunk: int = 64) -> np.ndarray:
  """Top-1 re-identification rate after 1, 2, ..., R epochs.

  Args:
    key: PRNG key choosing the query users (without replacement).
    site1_NxR, site2_NxR: [N, R] topic indices each site saw for each user and epoch.
    cfg: API parameters (the attack weights depend on k, p, |O|).
    num_queries: how many users are queried (all when None).
    chunk: queries scored together (memory ~ chunk * N * R).

  Returns:
    [R] rates; entry r uses epochs 0..r. Chance level is 1 / N.
  """
  s1, s2 = np.asarray(site1_NxR), np.asarray(site2_NxR)
  if s1.shape != s2.shape or s1.ndim != 2:
    raise ValueError(f"site traces must both have shape [N, R], got {s1.shape}, {s2.shape}")
  validation.array_in_range("site2 traces", s2, 0, cfg.num_topics - 1)
  n = s1.shape[0]
  q = n if num_queries is None else min(validation.positive_int("num_queries", num_queries), n)
  log_a, log_b = attack_weights(s1, cfg)
  truth = np.asarray(jax.random.choice(key, n, (q,), replace=False))
  hits = _rates(jnp.asarray(s1), jnp.asarray(s2[truth]), jnp.asarray(truth),
                jnp.asarray(log_a - log_b), chunk)
  return np.asarray(hits).mean(axis=0)
