"""Reading and writing the public release's JSON artefacts (no pandas needed).

* `taxonomy.json`: a table with columns topic_id, topic_label (also accepted: topics_id,
  topics_label); the row order defines topic index i <-> taxonomy id.
* `q_within.json`: columns topic_1_id, topic_1_label, topic_2_id, topic_2_label, frequency
  (unordered pairs, each listed once); `q_across.json`: the same with week_1_topic_id,
  week_1_topic_label, week_2_topic_id, week_2_topic_label (the topic_1/topic_2 names are also
  accepted). Pairs that are not listed have frequency 0.
* `output_parameters.json`: the fitted logits as nested objects
  {"type t": {"epoch w": {"slot s": {"<topic id>": logit}}}}.

Tables are pandas `DataFrame.to_json` output; every orient pandas writes for a DataFrame
(records, columns, index, split, table, and JSON lines) is recognised.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from tnx.privacy.topics import model
from tnx.privacy.topics.stats import TopicStatistics

WITHIN_COLUMNS = ("topic_1_id", "topic_1_label", "topic_2_id", "topic_2_label", "frequency")
ACROSS_COLUMNS = ("week_1_topic_id", "week_1_topic_label", "week_2_topic_id",
                  "week_2_topic_label", "frequency")


def read_table(path: str, columns: Sequence[str], alternative: Sequence[str] = ()
               ) -> dict[str, list]:
  """Reads a pandas-JSON table; returns {column: values} for `columns` (all required).

  With `alternative`, a table whose columns include alternative[0] but not columns[0] is
  read with the `alternative` names instead (the result keeps the names of `columns`).
  """
  with open(path) as f:
    text = f.read()
  try:
    obj = json.loads(text)
  except json.JSONDecodeError:
    try:                                             # JSON lines (to_json(lines=True))
      obj = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
      raise ValueError(f"path {path!r} is not a JSON table: {e}") from None
  if isinstance(obj, dict) and "data" in obj and ("schema" in obj or "columns" in obj):
    if "schema" in obj:                              # orient='table': records under data
      obj = obj["data"]
    else:                                            # orient='split'
      obj = [dict(zip(obj["columns"], row)) for row in obj["data"]]
  if isinstance(obj, dict):
    inner = list(obj.values())
    if not all(isinstance(v, dict) for v in inner):
      raise ValueError(f"path {path!r}: unrecognised JSON table layout")
    if any(c in obj for c in (*columns, *alternative)):   # orient='columns': {col: {row: v}}
      rows = sorted({r for v in inner for r in v}, key=_row_key)
      obj = [{c: obj[c].get(r) for c in obj} for r in rows]
    else:                                            # orient='index': {row: {col: v}}
      obj = [obj[r] for r in sorted(obj, key=_row_key)]
  if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
    raise ValueError(f"path {path!r}: expected a table of records, got {type(obj).__name__}")
  present = set().union(*(r.keys() for r in obj)) if obj else set(columns)
  if alternative and columns[0] not in present and alternative[0] in present:
    got = read_table(path, alternative)
    return {c: got[a] for c, a in zip(columns, alternative)}
  missing = [c for c in columns if c not in present]
  if missing:
    raise ValueError(f"path {path!r}: table is missing columns {missing} (has "
                     f"{sorted(present)})")
  return {c: [r.get(c) for r in obj] for c in columns}


def _row_key(r: str):
  return (0, int(r), "") if str(r).lstrip("-").isdigit() else (1, 0, str(r))


def write_table(path: str, columns: dict[str, Sequence]) -> None:
  """Writes a records-orient table, as pandas `to_json(orient='records')` does."""
  names = list(columns)
  rows = [dict(zip(names, vals)) for vals in zip(*(columns[c] for c in names))]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(rows, f)


@dataclasses.dataclass(frozen=True)
class Taxonomy:
  """ids_O: taxonomy id of each topic index; labels_O: its label."""
  ids_O: np.ndarray
  labels_O: tuple[str, ...]

  def __post_init__(self):
    if len(set(self.ids_O.tolist())) != len(self.ids_O):
      raise ValueError("taxonomy ids must be unique")

  @property
  def num_topics(self) -> int:
    return len(self.ids_O)

  def index(self, name: str, ids) -> np.ndarray:
    """Topic indices of taxonomy `ids`; ValueError naming `name` for an id not in it."""
    q = np.asarray(ids)
    order = np.argsort(self.ids_O)
    sorted_ids = self.ids_O[order]
    pos = np.clip(np.searchsorted(sorted_ids, q), 0, len(sorted_ids) - 1)
    bad = sorted_ids[pos] != q
    if np.any(bad):
      raise ValueError(f"{name}: topic ids {np.unique(q[bad])[:5].tolist()} are not in the "
                       f"taxonomy of {self.num_topics} topics")
    return order[pos].astype(np.int32)


def generated_taxonomy(num_topics: int) -> Taxonomy:
  """A stand-in taxonomy (ids 1..O, labels '/Topic i') for generated populations."""
  return Taxonomy(np.arange(1, num_topics + 1), tuple(f"/Topic {i}" for i in
                                                      range(1, num_topics + 1)))


def load_taxonomy(path: str) -> Taxonomy:
  t = read_table(path, ("topic_id", "topic_label"), ("topics_id", "topics_label"))
  return Taxonomy(_int_ids(path, "topic_id", t["topic_id"]),
                  tuple(str(x) for x in t["topic_label"]))


def save_taxonomy(path: str, taxonomy: Taxonomy) -> None:
  write_table(path, {"topic_id": taxonomy.ids_O.tolist(), "topic_label": taxonomy.labels_O})


def _int_ids(path: str, column: str, values: list) -> np.ndarray:
  if any(not isinstance(v, (int, float)) or isinstance(v, bool) or v is None
         or float(v) != int(v) for v in values):
    raise ValueError(f"path {path!r}: column {column} must hold integer topic ids")
  return np.asarray(values, np.int64)


def load_pair_table(path: str, taxonomy: Taxonomy, kind: str) -> np.ndarray:
  """A within ([O, O] upper triangle, a < b by index) or across ([O, O]) frequency table."""
  if kind not in ("within", "across"):
    raise ValueError(f"kind must be 'within' or 'across', got {kind!r}")
  cols = WITHIN_COLUMNS if kind == "within" else ACROSS_COLUMNS
  alt = WITHIN_COLUMNS if kind == "across" else ()
  return _pairs(path, read_table(path, cols, alt), cols, taxonomy, kind)


def _pairs(path, table, cols, taxonomy, kind) -> np.ndarray:
  a = taxonomy.index(f"path {path!r} column {cols[0]}", _int_ids(path, cols[0], table[cols[0]]))
  b = taxonomy.index(f"path {path!r} column {cols[2]}", _int_ids(path, cols[2], table[cols[2]]))
  freq = table["frequency"]
  if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in freq):
    raise ValueError(f"path {path!r}: column frequency must hold numbers")
  freq = np.asarray(freq, np.float64)
  bad = ~np.isfinite(freq) | (freq < 0)
  if bad.any():
    raise ValueError(f"path {path!r}: column frequency must be finite and >= 0, found "
                     f"{freq[bad][:3].tolist()}")
  if kind == "within":
    if np.any(a == b):
      raise ValueError(f"path {path!r}: a within-week pair must name two different topics")
    a, b = np.minimum(a, b), np.maximum(a, b)
  o = taxonomy.num_topics
  flat = a.astype(np.int64) * o + b
  if len(np.unique(flat)) != len(flat):
    raise ValueError(f"path {path!r}: a topic pair is listed more than once")
  out = np.zeros((o, o))
  out[a, b] = freq
  return out


def save_pair_table(path: str, table_OxO: np.ndarray, taxonomy: Taxonomy, kind: str) -> None:
  """Writes the non-zero cells in the release's format, highest frequency first."""
  cols = WITHIN_COLUMNS if kind == "within" else ACROSS_COLUMNS
  t = np.triu(table_OxO, 1) if kind == "within" else np.asarray(table_OxO)
  a, b = np.nonzero(t)
  order = np.argsort(-t[a, b], kind="stable")
  a, b = a[order], b[order]
  ids, labels = taxonomy.ids_O, taxonomy.labels_O
  write_table(path, {cols[0]: ids[a].tolist(), cols[1]: [labels[i] for i in a],
                     cols[2]: ids[b].tolist(), cols[3]: [labels[i] for i in b],
                     "frequency": t[a, b].tolist()})


def load_statistics(within_path: str, across_path: str, taxonomy: Taxonomy,
                    top_k: int = 5) -> TopicStatistics:
  """The released statistics; q_single is derived as sum_b q_within(a, b) / (k - 1)."""
  within = load_pair_table(within_path, taxonomy, "within")
  across = load_pair_table(across_path, taxonomy, "across")
  single = (within.sum(0) + within.sum(1)) / (top_k - 1)
  return TopicStatistics(single, within, across)


def save_parameters(path: str, mixture: model.TypeMixture, taxonomy: Taxonomy) -> None:
  logits = np.asarray(mixture.logits_TxWxKxO, np.float64)
  ids = [str(i) for i in taxonomy.ids_O.tolist()]
  obj = {f"type {t}": {f"epoch {w}": {f"slot {s}": dict(zip(ids, logits[t, w, s].tolist()))
                                      for s in range(logits.shape[2])}
                       for w in range(logits.shape[1])} for t in range(logits.shape[0])}
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(obj, f)


def load_parameters(path: str, taxonomy: Taxonomy) -> model.TypeMixture:
  """The fitted mixture of `output_parameters.json`, topics in taxonomy order."""
  with open(path) as f:
    obj = json.load(f)

  def child(node, name, where):
    if not isinstance(node, dict) or name not in node:
      raise ValueError(f"path {path!r}: missing key {name!r} under {where or 'the top level'}")
    return node[name]

  def count(node, prefix):
    n = 0
    while isinstance(node, dict) and f"{prefix} {n}" in node:
      n += 1
    return n

  num_types = count(obj, "type")
  if num_types == 0:
    raise ValueError(f"path {path!r}: expected keys 'type 0', 'type 1', ...")
  first = child(obj, "type 0", "")
  num_weeks, num_slots = count(first, "epoch"), count(child(first, "epoch 0", "type 0"), "slot")
  ids = [str(i) for i in taxonomy.ids_O.tolist()]
  logits = np.empty((num_types, num_weeks, num_slots, taxonomy.num_topics))
  for t in range(num_types):
    for w in range(num_weeks):
      for s in range(num_slots):
        where = f"type {t}/epoch {w}"
        slot = child(child(child(obj, f"type {t}", ""), f"epoch {w}", f"type {t}"),
                     f"slot {s}", where)
        extra = set(slot) - set(ids)
        if extra:
          raise ValueError(f"path {path!r}: {where}/slot {s} has topic ids not in the "
                           f"taxonomy: {sorted(extra)[:5]}")
        row = [child(slot, i, f"{where}/slot {s}") for i in ids]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in row):
          raise ValueError(f"path {path!r}: {where}/slot {s} has non-finite logits")
        logits[t, w, s] = row
  return model.TypeMixture(jnp.asarray(logits))
