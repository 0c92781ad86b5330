"""The language model's typed config (`LMConfig`) and its building from an
`ml_collections.ConfigDict` (`lm_config`, `memory_config_dict`).

`LMConfig.memory` maps every memory family to its typed, frozen config; it may be given as
{family: {field: value}} overrides, which are validated when the LMConfig is built, with the
full key path in the error (e.g. "model.memory.titans.chunk_size must be a positive integer,
got 0"). A family's `num_heads` defaults to the LM's `n_heads`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import ml_collections as mlc

from tnx import validation
from tnx.models import registry
from tnx.models.families import FAMILIES
from tnx.nn.layers import default_mlp_hidden, dtype_of

PREFIX = "model.memory"


@dataclasses.dataclass(frozen=True)
class LMConfig:
  """Typed model config.

  Attributes:
    vocab_size: V. d_model: D. n_layers: number of blocks. n_heads: attention heads (and the
      memory families' num_heads unless they set it).
    mlp_hidden: gated-MLP width F (0 = 8/3 D rounded to 8).
    mixers: token-mixer names, cycled over the layers (see tnx.models.mixers).
    window: sliding-window size / MAC segment length.
    n_persistent: Titans persistent memory tokens.
    tie_embeddings: reuse the embedding matrix as the output head.
    rope_base: RoPE frequency base.
    dtype: compute dtype name ('float32', 'bfloat16', 'float64').
    fp32_softmax_and_loss: softmax and logits in float32 regardless of dtype.
    memory: {family: config} for every family of `tnx.models.families.FAMILIES` (given as
      typed configs or {field: value} overrides of the defaults).
    remat: rematerialize each block in the backward pass.
  """

  vocab_size: int = 256
  d_model: int = 64
  n_layers: int = 2
  n_heads: int = 4
  mlp_hidden: int = 0
  mixers: tuple[str, ...] = ("attention",)
  window: int = 64
  n_persistent: int = 4
  tie_embeddings: bool = True
  rope_base: float = 10000.0
  dtype: str = "float32"
  fp32_softmax_and_loss: bool = True
  memory: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  remat: bool = False

  def __post_init__(self):
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "window"):
      validation.positive_int(name, getattr(self, name))
    validation.non_negative_int("mlp_hidden", self.mlp_hidden)
    validation.non_negative_int("n_persistent", self.n_persistent)
    dtype_of(self.dtype)
    if isinstance(self.mixers, str) or not self.mixers:
      raise ValueError(f"mixers must be a non-empty tuple of mixer names, got {self.mixers!r}")
    for m in self.mixers:
      validation.one_of("mixers", m, sorted(registry.MIXERS))
    object.__setattr__(self, "mixers", tuple(self.mixers))
    object.__setattr__(self, "memory", memory_configs(self.memory, n_heads=self.n_heads))

  @property
  def compute_dtype(self) -> Any:
    return dtype_of(self.dtype)

  @property
  def hidden(self) -> int:
    return self.mlp_hidden or default_mlp_hidden(self.d_model)

  def mixer_at(self, layer: int) -> str:
    return self.mixers[layer % len(self.mixers)]


# -- typed memory configs from overrides --------------------------------------------------
def _dataclass_type(cls: type, name: str) -> type | None:
  """The dataclass type of field `name` of `cls` (also inside `X | None`), or None."""
  hint = typing.get_type_hints(cls)[name]
  args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
  return next((a for a in args if dataclasses.is_dataclass(a)), None)


def _with_path(path: str, fields: Any, err: ValueError) -> ValueError:
  """The error with the key path: '<path>.<field> ...' when it names a field."""
  msg = str(err)
  head = msg.split(" ", 1)[0].split("=", 1)[0]
  return ValueError(f"{path}.{msg}" if head in fields else f"{path}: {msg}")


def _build(cls: type, values: Mapping[str, Any], path: str, **defaults: Any) -> Any:
  """cls(**values) with nested dataclass fields given as mappings of overrides on top of
  the field's (resolved) default; None values mean the default."""
  fields = {f.name for f in dataclasses.fields(cls)}
  flat, nested = dict(defaults), {}
  for key, value in values.items():
    if key not in fields:
      raise ValueError(f"{path}.{key} is not a field of {cls.__name__}; expected one of "
                       f"{sorted(fields)}")
    if value is None:
      continue
    sub = _dataclass_type(cls, key)
    if sub is not None and isinstance(value, Mapping):
      nested[key] = {k: v for k, v in value.items() if v is not None}
    else:
      flat[key] = tuple(value) if isinstance(value, list) else value
  try:
    cfg = cls(**flat)
  except ValueError as e:
    raise _with_path(path, fields, e) from None
  except TypeError as e:
    raise ValueError(f"{path}: {e}") from None
  for key, overrides in nested.items():
    if overrides:  # on top of the resolved default (e.g. TTT's kind-dependent memory)
      base = getattr(cfg, key)
      sub = _build(type(base), overrides, f"{path}.{key}", **{
          f.name: getattr(base, f.name) for f in dataclasses.fields(base)})
      try:
        cfg = dataclasses.replace(cfg, **{key: sub})
      except ValueError as e:
        raise _with_path(path, fields, e) from None
  return cfg


def memory_configs(memory: Mapping[str, Any], *, n_heads: int) -> dict[str, Any]:
  """{family: typed config} for every registered family from typed configs or overrides."""
  if not isinstance(memory, Mapping):
    raise ValueError(f"{PREFIX} must map family names to configs, got {memory!r}")
  for family in memory:
    if family not in FAMILIES:
      raise ValueError(f"{PREFIX}.{family} is not a memory family; expected one of "
                       f"{sorted(FAMILIES)}")
  out = {}
  for family, (cls, _) in FAMILIES.items():
    value = memory.get(family, {})
    if isinstance(value, cls):
      out[family] = value
    elif isinstance(value, Mapping):
      heads = {} if value.get("num_heads") is not None else {"num_heads": n_heads}
      out[family] = _build(cls, value, f"{PREFIX}.{family}", **heads)
    else:
      raise ValueError(f"{PREFIX}.{family} must be a {cls.__name__} or a mapping of its "
                       f"fields, got {value!r}")
  return out


# -- ConfigDict <-> LMConfig ---------------------------------------------------------------
def _placeholder(cls: type, name: str) -> Any:
  hint = typing.get_type_hints(cls)[name]
  args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
  base = typing.get_origin(args[0]) or args[0]
  return mlc.config_dict.placeholder(base if base in (int, float, bool, str, tuple) else object)


def _section(cls: type, value: Any) -> mlc.ConfigDict:
  """ConfigDict of a config dataclass's fields: defaults by value, None as typed placeholders,
  dtypes by name, nested dataclasses as sub-dicts."""
  out = mlc.ConfigDict()
  for f in dataclasses.fields(cls):
    v = getattr(value, f.name) if value is not None else None
    sub = _dataclass_type(cls, f.name)
    if sub is not None:
      out[f.name] = _section(sub, v)
    elif v is None:
      out[f.name] = _placeholder(cls, f.name)
    elif isinstance(v, type) or isinstance(v, jnp.dtype):
      out[f.name] = jnp.dtype(v).name
    else:
      out[f.name] = v
  return out


def memory_config_dict() -> mlc.ConfigDict:
  """One sub-dict per memory family with every field of its config: the defaults, with None
  (placeholders) where the value comes from elsewhere (num_heads: model.n_heads; TTT's and
  ATLAS's kind / variant defaults), so `--config.model.memory.<family>.<field>=v` is checked."""
  out = mlc.ConfigDict()
  for family, (cls, _) in FAMILIES.items():
    unresolved = {f.name: f.default for f in dataclasses.fields(cls)
                  if f.default is not dataclasses.MISSING}
    section = _section(cls, types.SimpleNamespace(**unresolved))
    section.num_heads = mlc.config_dict.placeholder(int)
    out[family] = section
  return out


def split_list(text: str | Any) -> tuple[str, ...]:
  """'a,b' or a sequence -> ('a', 'b')."""
  if isinstance(text, str):
    return tuple(t.strip() for t in text.split(",") if t.strip())
  return tuple(str(t) for t in text)


def lm_config(model: mlc.ConfigDict) -> LMConfig:
  """The typed model config from the `model` section of a ConfigDict (ValueError names the
  offending key)."""
  m = model.to_dict()
  memory = m.pop("memory", {})
  fields = {f.name for f in dataclasses.fields(LMConfig)}
  for key in m:
    if key not in fields:
      raise ValueError(f"model.{key} is not a field of LMConfig; expected one of "
                       f"{sorted(fields)}")
  m["mixers"] = split_list(m.get("mixers", "attention"))
  return LMConfig(memory=memory, **m)
