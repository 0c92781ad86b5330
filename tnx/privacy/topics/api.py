"""Topics API simulator: weekly top-k topic sets and what calling sites observe.

Model of Chrome's shipped Topics API used by arXiv 2506.23855 (Sec. 2) and its predecessor
(Carey et al., "Measuring Re-identification Risk", arXiv 2304.07210):

* epochs are weeks; at the end of week w the browser forms S_w(u), the k = 5 most visited
  topics of the week (ties broken uniformly at random), padded with uniformly random topics
  when fewer than k were visited (`top_topics`);
* a site calling the API during week w + 1 receives, for each of the last E = 3 epochs, one
  topic: with probability p = 0.05 a uniform topic of the whole taxonomy, otherwise a uniform
  member of that epoch's S (`site_topics`); the draw is made once per (site, epoch), so repeated
  calls of one site see the same topic, and different sites draw independently;
* one call returns the topics of the E exposed epochs with duplicates removed (`api_call`).

Not simulated (as in the research simulators): Chrome's observed-by-caller filter, which
withholds a set topic from a caller that has not seen the user on a site of that topic in the
last 3 epochs (the random 5 % topic is exempt). Every caller here is assumed to pass it.

Dimension letters: N users, W weeks (epochs), K slots per week (the k of the API), O topics
in the taxonomy, S calling sites, E epochs exposed per call.

Topic sets are int arrays `sets_NxWxK` of topic *indices* in [0, O) (position in the
taxonomy, not taxonomy ids); -1 marks an empty slot, and the non-negative entries of one week
are distinct.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tnx import validation

EMPTY = -1


@dataclasses.dataclass(frozen=True)
class APIConfig:
  """Parameters of the Topics API (defaults: Chrome's shipped values, taxonomy v2)."""
  num_topics: int = 469            # |O|, Topics taxonomy v2
  top_k: int = 5                   # k: topics per weekly set
  random_topic_prob: float = 0.05  # p: chance a call returns a uniform topic of O
  epochs_exposed: int = 3          # E: epochs one call covers

  def __post_init__(self):
    validation.positive_int("num_topics", self.num_topics)
    validation.positive_int("top_k", self.top_k)
    validation.in_range("random_topic_prob", self.random_topic_prob, 0.0, 1.0)
    validation.positive_int("epochs_exposed", self.epochs_exposed)
    if self.top_k > self.num_topics:
      raise ValueError(f"top_k={self.top_k} must not exceed num_topics={self.num_topics}")

  @property
  def q_in(self) -> float:
    """P(a call shows topic t | t in the user's set) = (1 - p) / k + p / |O|."""
    return (1 - self.random_topic_prob) / self.top_k + self.random_topic_prob / self.num_topics

  @property
  def q_out(self) -> float:
    """P(a call shows topic t | t not in the user's set) = p / |O|."""
    return self.random_topic_prob / self.num_topics


def check_sets(name: str, sets_NxWxK, num_topics: int, *, complete: bool = False
               ) -> np.ndarray:
  """Validates topic sets; returns them as an int32 numpy array.

  Raises ValueError naming `name` when the shape is not [N, W, K], an entry lies outside
  [-1, num_topics), a week repeats a topic, a user has no topic in any week, or (with
  `complete`) a week has an empty slot.
  """
  s = np.asarray(sets_NxWxK)
  if s.ndim != 3 or 0 in s.shape:
    raise ValueError(f"{name} must be a non-empty int array [N, W, K], got shape {s.shape}")
  if not np.issubdtype(s.dtype, np.integer):
    raise ValueError(f"{name} must hold integer topic indices, got dtype {s.dtype}")
  bad = (s < EMPTY) | (s >= num_topics)
  if bad.any():
    raise ValueError(f"{name} must hold topic indices in [0, {num_topics}) or -1 (empty), "
                     f"found e.g. {s[bad][:3].tolist()}")
  present = s >= 0
  no_topics = ~present.any(axis=(1, 2))
  if no_topics.any():
    raise ValueError(f"{name}: users {np.flatnonzero(no_topics)[:5].tolist()} have no topics "
                     "in any week (every user needs at least one topic)")
  if complete and not present.all():
    raise ValueError(f"{name} must have {s.shape[2]} topics in every week (pad incomplete "
                     "weeks with pad_sets first)")
  srt = np.sort(s, axis=-1)
  dup = (srt[..., 1:] == srt[..., :-1]) & (srt[..., 1:] >= 0)
  if dup.any():
    u, w = np.argwhere(dup.any(axis=-1))[0]
    raise ValueError(f"{name}: user {u} week {w} repeats a topic: {s[u, w].tolist()}")
  return s.astype(np.int32)


@jax.jit
def _top_topics(key: jax.Array, visits_NxWxO: jax.Array, k_template: jax.Array) -> jax.Array:
  n, w, o = visits_NxWxO.shape
  tie_break = jax.random.uniform(key, (n, w, o))
  topic = jnp.broadcast_to(jnp.arange(o, dtype=jnp.int32), (n, w, o))
  # Lexicographic sort: most visits first, then the random key. Unvisited topics (0 visits)
  # come after every visited one in uniformly random order, which is the API's padding.
  _, _, order = jax.lax.sort((-visits_NxWxO, tie_break, topic), dimension=-1, num_keys=2)
  return order[..., :k_template.shape[0]]


def top_topics(key: jax.Array, visits_NxWxO, top_k: int = 5) -> jax.Array:
  """The weekly top-k sets S_w(u) from visit counts, with random tie-breaks and padding.

  Args:
    key: PRNG key for tie-breaks and padding.
    visits_NxWxO: [N, W, O] non-negative visit counts of each topic in each week.
    top_k: k.

  Returns:
    [N, W, k] int32 topic indices, k distinct topics per week.
  """
  v = np.asarray(visits_NxWxO)
  if v.ndim != 3:
    raise ValueError(f"visits must have shape [N, W, O], got {v.shape}")
  top_k = validation.positive_int("top_k", top_k)
  if top_k > v.shape[2]:
    raise ValueError(f"top_k={top_k} exceeds the {v.shape[2]} topics of visits")
  validation.array_in_range("visits", v, 0, np.inf)
  empty = ~(v > 0).any(axis=(1, 2))
  if empty.any():
    raise ValueError(f"visits: users {np.flatnonzero(empty)[:5].tolist()} have no topics "
                     "(no visit in any week)")
  return _top_topics(key, jnp.asarray(v), jnp.zeros((top_k,)))


@jax.jit
def dedup_slots(slots_NxWxK: jax.Array) -> jax.Array:
  """Replaces repeated topics of a week by -1 (first occurrence kept), as the API forms a set.

  Args:
    slots_NxWxK: [..., K] topic indices (e.g. the raw slot draws of the type mixture).

  Returns:
    [..., K] with every later copy of a topic set to -1.
  """
  k = slots_NxWxK.shape[-1]
  same = slots_NxWxK[..., :, None] == slots_NxWxK[..., None, :]
  earlier = jnp.tril(jnp.ones((k, k), bool), -1)     # [s, j]: j < s
  repeated = jnp.any(same & earlier, axis=-1)
  return jnp.where(repeated, EMPTY, slots_NxWxK)


@jax.jit
def _pad_sets(key: jax.Array, sets_NxWxK: jax.Array, num_topics_template: jax.Array
              ) -> jax.Array:
  o = num_topics_template.shape[0]
  present = jnp.any(jax.nn.one_hot(sets_NxWxK, o, dtype=bool), axis=-2)     # [N, W, O]
  score = jnp.where(present, 2.0, jax.random.uniform(key, present.shape))
  k = sets_NxWxK.shape[-1]
  candidates = jnp.argsort(score, axis=-1)[..., :k]    # absent topics in random order
  empty = sets_NxWxK < 0
  rank = jnp.cumsum(empty, axis=-1) - 1                # i-th empty slot takes candidate i
  fill = jnp.take_along_axis(candidates, jnp.maximum(rank, 0), axis=-1).astype(jnp.int32)
  return jnp.where(empty, fill, sets_NxWxK)


def pad_sets(key: jax.Array, sets_NxWxK, num_topics: int) -> jax.Array:
  """Fills empty slots (-1) with distinct uniformly random topics not already in the week."""
  s = check_sets("sets", sets_NxWxK, num_topics)
  return _pad_sets(key, jnp.asarray(s), jnp.zeros((num_topics,)))


@jax.jit
def _site_topics(key: jax.Array, sets_NxWxK: jax.Array, template_SxO: jax.Array,
                 p: jax.Array) -> jax.Array:
  num_sites, o = template_SxO.shape
  n, w, k = sets_NxWxK.shape
  k_rand, k_slot, k_unif = jax.random.split(key, 3)
  shape = (num_sites, n, w)
  is_random = jax.random.bernoulli(k_rand, p, shape)
  slot = jax.random.randint(k_slot, shape, 0, k)
  member = jnp.take_along_axis(sets_NxWxK[None], slot[..., None], axis=-1)[..., 0]
  uniform = jax.random.randint(k_unif, shape, 0, o)
  return jnp.where(is_random, uniform, member).astype(jnp.int32)


def site_topics(key: jax.Array, sets_NxWxK, num_sites: int, cfg: APIConfig) -> jax.Array:
  """The topic each site is given for each user and epoch (one draw per (site, epoch)).

  Args:
    key: PRNG key.
    sets_NxWxK: [N, W, K] complete weekly sets (k distinct topics every week).
    num_sites: S, the number of independent callers.
    cfg: API parameters (taxonomy size, p).

  Returns:
    [S, N, W] int32 topic indices: with probability p uniform over O, otherwise a uniform
    member of S_w(u).
  """
  s = check_sets("sets", sets_NxWxK, cfg.num_topics, complete=True)
  if s.shape[2] != cfg.top_k:
    raise ValueError(f"sets must have top_k={cfg.top_k} slots per week, got {s.shape[2]}")
  num_sites = validation.positive_int("num_sites", num_sites)
  return _site_topics(key, jnp.asarray(s), jnp.zeros((num_sites, cfg.num_topics)),
                      jnp.asarray(cfg.random_topic_prob))


def api_call(site_topics_SxNxW: jax.Array, week: int, epochs_exposed: int = 3) -> jax.Array:
  """What one call during week `week` returns: the topics of epochs week-1, ..., week-E.

  Args:
    site_topics_SxNxW: [S, N, W] per-(site, epoch) topics from `site_topics`.
    week: the week of the call, in [1, W]; epochs before 0 do not exist and give -1.
    epochs_exposed: E.

  Returns:
    [S, N, E] topics, most recent epoch first, a topic repeated across epochs returned once
    (later copies -1), as the API returns a de-duplicated list.
  """
  num_weeks = site_topics_SxNxW.shape[-1]
  week = validation.positive_int("week", week)
  if week > num_weeks:
    raise ValueError(f"week must be in [1, {num_weeks}], got {week}")
  epochs_exposed = validation.positive_int("epochs_exposed", epochs_exposed)
  epochs = week - 1 - np.arange(epochs_exposed)
  got = jnp.take(site_topics_SxNxW, np.maximum(epochs, 0), axis=-1)
  got = jnp.where(jnp.asarray(epochs >= 0), got, EMPTY)
  return dedup_slots(got)
