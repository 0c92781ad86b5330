"""TNT / Titans experiments on the main job's models (examples.tnt_experiments).

  python -m examples.tnt_experiments --experiment=time_to_target   # Table 1 analogue
  python -m examples.tnt_experiments --experiment=chunk_sweep      # Fig. 2 analogue
  python -m examples.tnt_experiments --experiment=time_to_target --smoke

Every arm is the main job's LM (tnx/configs/tnt_lm.py: D = 64, 2 layers, L = 2048, batch 2,
160 steps, equal parameter counts), trained once per seed:

* time_to_target: Titans at every chunk in `exp.titans_chunks` and TNT stage 1 at every local
  chunk in `exp.tnt_local_chunks` (C_G = S_L = 512, one local memory), seeds `exp.seeds`. The
  target is the highest of Titans C = `exp.baseline_chunk`'s best validation losses over the
  seeds (the baseline's quality, reached by every seed of it); time = steps to the target x
  the arm's step time measured round-robin after training. Each run is also evaluated at
  every chunk in `exp.sweep_chunks` at its end.
* chunk_sweep: from each TNT stage-1 run of time_to_target (trained first where missing),
  stage 2 at `job.stage2_local_chunks` for `job.stage2_steps` (peak lr x
  `job.stage2_lr_scale`), evaluated at every chunk in `exp.sweep_chunks`; the table puts
  every model's validation bits/byte at every inference chunk, before and after stage 2.
* quality: validation bits/byte at equal tokens (Tables 2-3 analogue) of the arms in
  `exp.quality_arms` (names in examples.tnt_experiments.QUALITY_ARMS: Titans C = 8 and 256,
  TTT-MLP, attention, sliding-window attention (window = S_L), TNT with 1, 2 and 4 local
  memories, TNT without the global memory, without the Q-K projection and without resets,
  TNT stage 2), equal parameter counts, seeds `exp.quality_seeds`; runs that time_to_target
  or chunk_sweep trained are reused.
"""

from __future__ import annotations

import ml_collections as mlc

from tnx.configs import tnt_lm

EXPERIMENTS = ("time_to_target", "chunk_sweep", "quality")


def get_config(arg: str | None = None) -> mlc.ConfigDict:
  smoke = arg == "smoke"
  if arg not in (None, "", "smoke"):
    raise ValueError(f"config argument {arg!r} is unknown; expected '' or 'smoke'")
  c = tnt_lm.get_config("smoke" if smoke else None)
  c.workdir = "runs/tnt_experiments_smoke" if smoke else "runs/tnt_experiments"
  c.experiment = "time_to_target"
  c.exp = mlc.ConfigDict()
  c.exp.titans_chunks = "2" if smoke else "8,16,32,64"
  c.exp.tnt_local_chunks = "4" if smoke else "8,16,32,64"
  c.exp.seeds = "0,1" if smoke else "0,1,2"
  c.exp.baseline_chunk = 2 if smoke else 8   # the target is this Titans arm's quality
  c.exp.sweep_chunks = "2,4" if smoke else "8,16,32,64"
  c.exp.quality_arms = ("titans_C2,attention,tnt_L2,tnt_no_global" if smoke else
                        "titans_C8,titans_C256,ttt_mlp,attention,swa,tnt_CL64,tnt_L2,tnt_L4,"
                        "tnt_no_global,tnt_no_qk,tnt_no_reset,tnt_CL64_stage2")
  c.exp.quality_seeds = "0"
  if not smoke:  # round-robin timing of 8 arms: more rounds than the main job's 3 x 2
    c.job.timing_rounds, c.job.timing_steps = 5, 3
  c.job.compile_cache = True                 # the seeds of an arm share its compilations
  return c
