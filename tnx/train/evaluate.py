"""Evaluation: validation loss, bits per byte, recall accuracy, and the chunk-size sweep
(evaluate one trained model at several inference chunk sizes; parameters are unchanged)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx

from tnx import sharding as shd
from tnx.models.lm import set_chunk_sizes
from tnx.train import steps


def evaluate(eval_step: Any, params: Any, rest: Any, batches: Sequence[dict[str, Any]],
             data_sharding: Any, *, bytes_per_token: float = 1.0) -> dict[str, float]:
  """Weighted mean NLL ('loss', nats/token), 'bits_per_byte' and argmax 'accuracy' over
  `batches` (numpy, process-local). bits/byte = loss / ln 2 / bytes_per_token."""
  nll = w = c = 0.0
  for b in batches:
    s, ws, cs = eval_step(params, rest, shd.to_global(b, data_sharding))
    nll, w, c = nll + float(s), w + float(ws), c + float(cs)
  if w == 0:
    raise ValueError("evaluation batches carry no weight (all weights are 0)")
  loss = nll / w
  return {"loss": loss, "bits_per_byte": loss / math.log(2) / bytes_per_token,
          "accuracy": c / w, "tokens": w}


def graphdef_at_chunk(graphdef: Any, abstract_params: Any, abstract_rest: Any, chunk: int
                      ) -> tuple[Any, int]:
  """The graph definition with every memory mixer's chunk set to `chunk` (TNT: each local
  chunk). Returns (graphdef, number of layers changed)."""
  model = nnx.merge(graphdef, abstract_params, abstract_rest)
  changed = 0
  for _, module in nnx.iter_modules(model):
    cfg = getattr(module, "cfg", None)
    if cfg is not None and dataclasses.is_dataclass(cfg):
      names = {f.name for f in dataclasses.fields(cfg)}
      if "local_chunk_sizes" in names:
        changed += set_chunk_sizes(module, local_chunk_sizes=(chunk,) * len(
            cfg.local_chunk_sizes))
      elif "chunk_size" in names:
        changed += set_chunk_sizes(module, chunk_size=chunk)
  new_graphdef, _, _ = nnx.split(model, nnx.Param, ...)
  return new_graphdef, changed


def chunk_sweep(graphdef: Any, params: Any, rest: Any, chunks: Sequence[int],
                batches: Sequence[dict[str, Any]], data_sharding: Any, *, fp32: bool = True
                ) -> dict[int, dict[str, float]]:
  """{chunk: evaluate(...)} for each inference chunk size (one compile per chunk)."""
  abstract = lambda t: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), t)
  out = {}
  for c in chunks:
    g, changed = graphdef_at_chunk(graphdef, abstract(params), abstract(rest), int(c))
    if not changed:
      raise ValueError("chunk sweep needs a model with memory mixers; found none")
    fn = jax.jit(steps.make_eval_step(g, fp32=fp32))
    out[int(c)] = evaluate(fn, params, rest, batches, data_sharding)
  return out
