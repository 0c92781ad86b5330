"""Recall of TNT, its ablations and the baselines at equal parameter count (experiment 2's
MQAR and needle columns, docs/tnt.md): the harness and tasks of examples.atlas_recall.

  python -m examples.tnt_recall                  # 3 seeds x 9 models x 5 tasks
  python -m examples.tnt_recall --smoke          # the wiring end to end (compiles)
  python -m examples.tnt_recall --config.job.seeds=0 --config.job.models=tnt,tnt_no_global
  python -m examples.tnt_recall --resume         # finish an interrupted job

The sequences are short (L = 64, as in atlas_recall), so TNT is scaled with them: shards of
S_L = 16 tokens (four per training sequence, the local memories reset at each), a global
memory chunk C_G = 16 = Titans' chunk, one local memory at C_L = 4. MQAR's pairs come first
and most queries fall in later shards, so a query's value reaches it through the global
memory (or, for attention, directly; for sliding-window attention of window S_L, only when
the pair is within 16 tokens). All memories share one fast-weight shape (MLP 16 -> 16 -> 16
per head) and Titans' inner rule, except TTT-MLP, which keeps its own (hidden 4 x d_k, its
learnable inner lr).
"""

from __future__ import annotations

import ml_collections as mlc

from tnx.configs import atlas_recall


def get_config(arg: str | None = None) -> mlc.ConfigDict:
  smoke = arg == "smoke"
  if arg not in (None, "", "smoke"):
    raise ValueError(f"config argument {arg!r} is unknown; expected '' or 'smoke'")
  c = atlas_recall.get_config("smoke" if smoke else None)
  c.workdir = "runs/tnt_recall_smoke" if smoke else "runs/tnt_recall"
  tnt = c.model.memory.tnt
  tnt.memory.expansion = 1        # Titans' fast-weight shape
  tnt.global_chunk_size = 8 if smoke else 16    # C_G
  tnt.shard_length = 8 if smoke else 16         # S_L (also the sliding window)
  tnt.local_chunk_sizes = (4,)                  # C_L
  # Titans' inner rule for every TNT memory (momentum, forget gate, its lr_max), so that TNT
  # and Titans differ only in the hierarchy. With TNT's default rule (no momentum, no forget
  # gate: the main job's simplified Titans) TNT stayed at chance on MQAR and on the needle
  # (first attempt, docs/tnt.md): its inner step is ~8x below Titans' without momentum.
  for key in ("momentum", "forget", "lr_max"):
    tnt[key] = c.model.memory.titans[key]
  # examples.atlas_recall.MODELS; tnt_L4: locals {1, 2, 4, 8}; tnt_no_reset: S_L beyond L
  c.job.models = ("tnt,swa,tnt_no_global" if smoke else
                  "titans,ttt_mlp,attention,swa,tnt,tnt_L4,tnt_no_global,tnt_no_qk,tnt_no_reset")
  c.job.pairs = "2" if smoke else "4,8,16,24"
  c.job.seeds = "0" if smoke else "0,1,2"
  c.job.figure = "tnt_recall.png"
  c.job.title = "TNT, its ablations and the baselines at equal parameter count: recall"
  return c
