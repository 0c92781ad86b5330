"""Public-release JSON: pandas-JSON tables in every orient, validation, parameters."""

import json

import numpy as np
import pytest

from tnx.privacy.topics import model, public

TAXONOMY = [{"topic_id": 1, "topic_label": "/Arts"}, {"topic_id": 243, "topic_label": "/News"},
            {"topic_id": 299, "topic_label": "/Sports"}]
WITHIN = [{"topic_1_id": 1, "topic_1_label": "/Arts", "topic_2_id": 243,
           "topic_2_label": "/News", "frequency": 0.118},
          {"topic_1_id": 299, "topic_1_label": "/Sports", "topic_2_id": 243,
           "topic_2_label": "/News", "frequency": 0.09}]
ACROSS = [{"week_1_topic_id": 243, "week_1_topic_label": "/News", "week_2_topic_id": 243,
           "week_2_topic_label": "/News", "frequency": 0.23},
          {"week_1_topic_id": 243, "week_1_topic_label": "/News", "week_2_topic_id": 1,
           "week_2_topic_label": "/Arts", "frequency": 0.10}]


def _orient(records, orient):
  cols = list(records[0])
  if orient == "records":
    return json.dumps(records)
  if orient == "columns":
    return json.dumps({c: {str(i): r[c] for i, r in enumerate(records)} for c in cols})
  if orient == "index":
    return json.dumps({str(i): r for i, r in enumerate(records)})
  if orient == "split":
    return json.dumps({"columns": cols, "index": list(range(len(records))),
                       "data": [[r[c] for c in cols] for r in records]})
  if orient == "table":
    return json.dumps({"schema": {"fields": [{"name": c} for c in cols]}, "data": records})
  return "\n".join(json.dumps(r) for r in records)          # lines


def _write(tmp_path, name, text):
  p = tmp_path / name
  p.write_text(text)
  return str(p)


@pytest.fixture
def taxonomy(tmp_path):
  return public.load_taxonomy(_write(tmp_path, "taxonomy.json", json.dumps(TAXONOMY)))


@pytest.mark.parametrize("orient", ["records", "columns", "index", "split", "table", "lines"])
def test_tables_in_every_orient(tmp_path, taxonomy, orient):
  w = _write(tmp_path, "q_within.json", _orient(WITHIN, orient))
  a = _write(tmp_path, "q_across.json", _orient(ACROSS, orient))
  s = public.load_statistics(w, a, taxonomy)
  assert s.within_OxO[0, 1] == 0.118 and s.within_OxO[1, 2] == 0.09   # (299, 243) -> [1, 2]
  assert np.count_nonzero(s.within_OxO) == 2 and np.all(np.tril(s.within_OxO) == 0)
  assert s.across_OxO[1, 1] == 0.23 and s.across_OxO[1, 0] == 0.10
  np.testing.assert_allclose(s.single_O, [0.118 / 4, (0.118 + 0.09) / 4, 0.09 / 4])


def test_taxonomy_variants(tmp_path):
  alt = [{"topics_id": r["topic_id"], "topics_label": r["topic_label"]} for r in TAXONOMY]
  t = public.load_taxonomy(_write(tmp_path, "t.json", _orient(alt, "columns")))
  np.testing.assert_array_equal(t.ids_O, [1, 243, 299])
  np.testing.assert_array_equal(t.index("ids", [299, 1]), [2, 0])
  with pytest.raises(ValueError, match="ids: topic ids \\[7\\] are not in the taxonomy"):
    t.index("ids", [7])


def test_round_trip_of_written_tables(tmp_path, taxonomy):
  rng = np.random.default_rng(0)
  within = np.triu(rng.random((3, 3)), 1)
  across = rng.random((3, 3))
  public.save_pair_table(str(tmp_path / "w.json"), within, taxonomy, "within")
  public.save_pair_table(str(tmp_path / "a.json"), across, taxonomy, "across")
  s = public.load_statistics(str(tmp_path / "w.json"), str(tmp_path / "a.json"), taxonomy)
  np.testing.assert_array_equal(s.within_OxO, within)
  np.testing.assert_array_equal(s.across_OxO, across)


@pytest.mark.parametrize("change, match", [
    (lambda r: r.pop("frequency"), "missing columns \\['frequency'\\]"),
    (lambda r: r.pop("topic_2_id"), "missing columns \\['topic_2_id'\\]"),
    (lambda r: r.update(topic_1_id=5), "topic_1_id: topic ids \\[5\\] are not in the taxonomy"),
    (lambda r: r.update(frequency=-0.1), "frequency must be finite and >= 0"),
    (lambda r: r.update(frequency="x"), "frequency must hold numbers"),
    (lambda r: r.update(topic_2_id=1), "two different topics"),
    (lambda r: r.update(topic_1_id=1.5), "integer topic ids"),
])
def test_malformed_within_tables_raise(tmp_path, taxonomy, change, match):
  records = [dict(r) for r in WITHIN]
  for r in records:
    change(r)
  path = _write(tmp_path, "bad.json", json.dumps(records))
  with pytest.raises(ValueError, match=match):
    public.load_pair_table(path, taxonomy, "within")


def test_duplicates_and_bad_layouts_raise(tmp_path, taxonomy):
  dup = WITHIN + [dict(WITHIN[0], topic_1_id=243, topic_2_id=1)]       # same unordered pair
  with pytest.raises(ValueError, match="more than once"):
    public.load_pair_table(_write(tmp_path, "d.json", json.dumps(dup)), taxonomy, "within")
  with pytest.raises(ValueError, match="not a JSON table"):
    public.load_pair_table(_write(tmp_path, "n.json", "{oops"), taxonomy, "within")
  no_freq = [{k: v for k, v in r.items() if k != "frequency"} for r in ACROSS]
  with pytest.raises(ValueError, match="missing columns \\['frequency'\\]"):
    public.load_pair_table(_write(tmp_path, "a.json", json.dumps(no_freq)), taxonomy, "across")
  # An across table may also use the topic_1 / topic_2 column names.
  got = public.load_pair_table(_write(tmp_path, "w.json", json.dumps(WITHIN)), taxonomy, "across")
  assert got[2, 1] == 0.09
  with pytest.raises(ValueError, match="kind"):
    public.load_pair_table(_write(tmp_path, "w.json", json.dumps(WITHIN)), taxonomy, "lag")


def test_parameters_round_trip_and_validation(tmp_path, taxonomy):
  mix = model.TypeMixture(np.random.default_rng(0).normal(size=(2, 4, 5, 3)))
  path = str(tmp_path / "output_parameters.json")
  public.save_parameters(path, mix, taxonomy)
  obj = json.loads(open(path).read())
  assert obj["type 1"]["epoch 3"]["slot 4"]["299"] == float(mix.logits_TxWxKxO[1, 3, 4, 2])
  back = public.load_parameters(path, taxonomy)
  np.testing.assert_array_equal(np.asarray(back.logits_TxWxKxO),
                                np.asarray(mix.logits_TxWxKxO, np.float64))
  del obj["type 1"]["epoch 2"]["slot 0"]["243"]
  bad = _write(tmp_path, "bad.json", json.dumps(obj))
  with pytest.raises(ValueError, match="missing key '243'"):
    public.load_parameters(bad, taxonomy)
  obj["type 1"]["epoch 2"]["slot 0"]["7"] = 0.0
  with pytest.raises(ValueError, match="not in the taxonomy"):
    public.load_parameters(_write(tmp_path, "bad2.json", json.dumps(obj)), taxonomy)
