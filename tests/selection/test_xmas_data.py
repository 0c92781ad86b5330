"""ShapesVQA: layout, answers recovered from the features, skew, paraphrased duplicates."""

import numpy as np
import pytest

from tnx.selection.xmas import data

CFG = data.ShapesVQAConfig(noise=0.0)


@pytest.fixture(scope="module")
def pool():
  return data.generate(7, 400, CFG)


def _patches(image_16xF):
  """Invert the frozen (injective) linear tower: [16, patch_dim]."""
  return np.linalg.lstsq(data.vision_tower(CFG).T, image_16xF.T, rcond=None)[0].T


def _words(tokens):
  return [data.VOCAB[t] for t in tokens if t != data.PAD]


def test_deterministic_and_layout(pool):
  again = data.generate(7, 400, CFG)
  for k in pool:
    np.testing.assert_array_equal(pool[k], again[k])
  n = len(pool["tokens"])
  for i in range(n):
    w = _words(pool["tokens"][i])
    img = pool["image_mask"][i]
    if pool["has_image"][i]:
      np.testing.assert_array_equal(np.flatnonzero(img), np.arange(3, 19))
    else:
      assert not img.any() and pool["family"][i] == 4
      np.testing.assert_array_equal(pool["image"][i], 0.0)
    assert w[:3] == ["BOS", "SYS1", "SYS2"] and w[-1] == "EOS" and w[-3] == "ANS"
    ans = np.flatnonzero(pool["weights"][i])
    assert len(ans) == 1 and pool["tokens"][i][ans[0]] == data.ANS
    assert pool["targets"][i][ans[0]] == pool["tokens"][i][ans[0] + 1]
    sep = 3 + 16 * pool["has_image"][i]
    np.testing.assert_array_equal(np.flatnonzero(pool["text_mask"][i]),
                                  np.arange(sep + 1, len(w)))
    np.testing.assert_array_equal(pool["token_mask"][i], pool["tokens"][i] != data.PAD)


def test_answers_follow_from_the_image(pool):
  for i in range(len(pool["tokens"])):
    w = _words(pool["tokens"][i])
    q, answer = w[w.index("SEP") + 1: -3], w[-2]
    fam = pool["family"][i]
    if fam == 4:
      assert int(answer) == int(q[1]) + int(q[2])
      continue
    f = np.round(_patches(pool["image"][i]), 6)
    shape = np.argmax(f[:, :4], 1) - 1                     # -1: empty cell
    colour = np.where(f[:, 4:8].max(1) > 0.5, np.argmax(f[:, 4:8], 1), -1)
    if fam == 0:
      s = [k for k, v in data.PARAPHRASE.items() if q[1] in v][0]
      assert answer == ("yes" if np.any(shape == data.SHAPES.index(s)) else "no")
    elif fam == 1:
      cell = 4 * int(q[2]) + int(q[3])
      assert shape[cell] >= 0 and answer == data.COLOURS[colour[cell]]
    elif fam == 2:
      assert int(answer) == int(np.sum(colour == data.COLOURS.index(q[1])))
    else:
      c = data.COLOURS.index(q[3])
      assert np.sum(colour == c) == 1
      assert answer == data.SHAPES[shape[colour == c][0]]


def test_skew_and_paraphrased_duplicates(pool):
  source = pool["source"]
  base = source == np.arange(len(source))
  counts = np.bincount(pool["family"][base], minlength=5)
  np.testing.assert_array_equal(counts, [200, 80, 40, 60, 20])      # 50/20/10/15/5 of 400
  groups = [np.flatnonzero(source == s) for s in np.unique(source)]
  dups = [g for g in groups if len(g) > 1]
  assert dups and all(3 <= len(g) <= 5 for g in dups)
  exists = np.sum(base & (pool["family"] == 0))
  assert 0.1 < len(dups) / exists < 0.3                               # about 20 %
  paraphrased = 0
  for g in dups:
    assert np.all(pool["family"][g] == 0)
    np.testing.assert_array_equal(pool["image"][g], pool["image"][g[:1]].repeat(len(g), 0))
    assert len({pool["targets"][j][pool["weights"][j] > 0][0] for j in g}) == 1
    paraphrased += len({tuple(pool["tokens"][j]) for j in g}) > 1
  assert paraphrased > len(dups) / 2


def test_test_set_balanced_and_config_errors():
  t = data.test_set(1, 10, CFG)
  np.testing.assert_array_equal(np.bincount(t["family"]), [10] * 5)
  assert np.all(t["source"] == np.arange(50))
  with pytest.raises(ValueError, match="seq_len"):
    data.ShapesVQAConfig(seq_len=20)
  with pytest.raises(ValueError, match="mix"):
    data.ShapesVQAConfig(mix=(0.5, 0.5))
  with pytest.raises(ValueError, match="density"):
    data.ShapesVQAConfig(density=0.0)
  with pytest.raises(ValueError, match="dup_copies"):
    data.ShapesVQAConfig(dup_copies=(4, 3))
