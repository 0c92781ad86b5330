"""Topics API simulator: top-k sets, padding, per-site draws against the API's probabilities."""

import jax
import numpy as np
import pytest

from tnx.privacy.topics import api


def test_top_topics_picks_most_visited_and_pads_uniformly():
  n, o = 4000, 10
  visits = np.zeros((n, 1, o), np.int32)
  visits[:, 0, :4] = [9, 7, 5, 3]            # four clear favourites
  visits[:, 0, 4] = 1
  visits[:, 0, 5] = 1                         # a tie for the fifth slot
  sets = np.asarray(api.top_topics(jax.random.PRNGKey(0), visits, 5))
  np.testing.assert_array_equal(sets[:, 0, :4], np.broadcast_to([0, 1, 2, 3], (n, 4)))
  fifth = sets[:, 0, 4]
  assert set(fifth.tolist()) == {4, 5}
  assert abs(np.mean(fifth == 4) - 0.5) < 4 * np.sqrt(0.25 / n)    # random tie-break

  light = np.zeros((n, 1, o), np.int32)
  light[:, 0, 0] = 2                          # one visited topic: four random pads
  sets = np.asarray(api.top_topics(jax.random.PRNGKey(1), light, 5))
  assert np.all(sets[:, 0, 0] == 0)
  api.check_sets("sets", sets, o, complete=True)
  pads = np.bincount(sets[:, 0, 1:].ravel(), minlength=o)[1:]
  expected = n * 4 / (o - 1)
  assert np.all(np.abs(pads - expected) < 4 * np.sqrt(expected))


def test_top_topics_rejects_users_without_topics():
  visits = np.ones((3, 2, 6), np.int32)
  visits[1] = 0
  with pytest.raises(ValueError, match="visits.*users \\[1\\] have no topics"):
    api.top_topics(jax.random.PRNGKey(0), visits)
  with pytest.raises(ValueError, match="visits"):
    api.top_topics(jax.random.PRNGKey(0), -visits)


def test_check_sets_errors():
  ok = np.array([[[0, 1, 2], [3, -1, -1]]])
  api.check_sets("sets", ok, 5)
  with pytest.raises(ValueError, match="sets.*no topics"):
    api.check_sets("sets", np.concatenate([ok, -np.ones_like(ok)]), 5)
  with pytest.raises(ValueError, match="sets.*topic indices in \\[0, 5\\)"):
    api.check_sets("sets", ok + 3, 5)
  with pytest.raises(ValueError, match="repeats a topic"):
    api.check_sets("sets", np.array([[[1, 1, 2]]]), 5)
  with pytest.raises(ValueError, match="every week"):
    api.check_sets("sets", ok, 5, complete=True)


def test_dedup_and_pad():
  slots = np.array([[[3, 3, 1, 3, 1], [0, 1, 2, 3, 4]]])
  dedup = np.asarray(api.dedup_slots(slots))
  np.testing.assert_array_equal(dedup, [[[3, -1, 1, -1, -1], [0, 1, 2, 3, 4]]])
  padded = np.asarray(api.pad_sets(jax.random.PRNGKey(0), dedup, 8))
  api.check_sets("padded", padded, 8, complete=True)
  np.testing.assert_array_equal(padded[0, 0, [0, 2]], [3, 1])
  np.testing.assert_array_equal(padded[0, 1], slots[0, 1])


def test_site_topics_match_stated_probabilities():
  cfg = api.APIConfig(num_topics=20, top_k=5, random_topic_prob=0.05)
  n, w, s = 20_000, 3, 2
  rng = np.random.default_rng(0)
  sets = np.stack([rng.permutation(20)[:5] for _ in range(n * w)]).reshape(n, w, 5)
  shown = np.asarray(api.site_topics(jax.random.PRNGKey(0), sets, s, cfg))     # [S, N, W]
  assert shown.shape == (s, n, w)
  in_set = (shown[..., None] == sets[None]).any(-1)
  draws = in_set.size
  # P(shown topic = a given member) = q_in; P(shown = a given non-member) = q_out.
  p_member = in_set.mean() / 5
  p_other = (~in_set).mean() / 15
  assert abs(p_member - cfg.q_in) < 4 * np.sqrt(cfg.q_in / (5 * draws))
  assert abs(p_other - cfg.q_out) < 4 * np.sqrt(cfg.q_out / (15 * draws))
  # Sites draw independently: agreement rate = sum_t P(t)^2 under the per-user law.
  agree = (shown[0] == shown[1]).mean()
  want = 5 * cfg.q_in ** 2 + 15 * cfg.q_out ** 2
  assert abs(agree - want) < 4 * np.sqrt(want / (n * w))


def test_q_in_q_out_default_taxonomy():
  cfg = api.APIConfig()
  assert cfg.q_in == pytest.approx(0.190107, abs=1e-6)
  assert cfg.q_out == pytest.approx(1.066e-4, rel=1e-3)


def test_site_topics_needs_complete_sets():
  cfg = api.APIConfig(num_topics=8, top_k=3)
  with pytest.raises(ValueError, match="every week"):
    api.site_topics(jax.random.PRNGKey(0), np.array([[[0, 1, -1]]]), 1, cfg)
  with pytest.raises(ValueError, match="num_sites"):
    api.site_topics(jax.random.PRNGKey(0), np.array([[[0, 1, 2]]]), 0, cfg)


def test_api_call_exposes_three_epochs_deduplicated():
  topics = np.array([[[4, 7, 4, 9, 9]]])             # [S=1, N=1, W=5]
  got = np.asarray(api.api_call(topics, week=4))      # epochs 3, 2, 1
  np.testing.assert_array_equal(got, [[[9, 4, 7]]])
  got = np.asarray(api.api_call(topics, week=5))      # epochs 4, 3, 2: 9 twice
  np.testing.assert_array_equal(got, [[[9, -1, 4]]])
  got = np.asarray(api.api_call(topics, week=1))      # only epoch 0 exists
  np.testing.assert_array_equal(got, [[[4, -1, -1]]])
  with pytest.raises(ValueError, match="week"):
    api.api_call(topics, week=6)


def test_config_validation():
  with pytest.raises(ValueError, match="random_topic_prob"):
    api.APIConfig(random_topic_prob=1.5)
  with pytest.raises(ValueError, match="top_k"):
    api.APIConfig(num_topics=3, top_k=5)
