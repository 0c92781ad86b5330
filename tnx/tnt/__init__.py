"""TNT: hierarchical global/local test-time memory with context parallelism and two-stage
training (arXiv 2511.07343), built on `tnx.memory`."""

from tnx.tnt.branches import (
    MemoryInputs,
    MemoryParams,
    combine,
    fold_shards,
    global_branch,
    local_branch,
    tnt_mix,
    unfold_shards,
)
from tnx.tnt.config import TNTConfig, check_context_lengths
from tnx.tnt.context_parallel import tnt_mix_context_parallel
from tnx.tnt.layer import TNTMemory
from tnx.tnt.qk_projection import qk_project
from tnx.tnt.stage2 import (
    freeze_nonlocal,
    param_labels,
    set_local_chunk_sizes,
    stage2_config,
    trainable_filter,
)

__all__ = [
    "MemoryInputs", "MemoryParams", "TNTConfig", "TNTMemory", "check_context_lengths",
    "combine", "fold_shards", "freeze_nonlocal", "global_branch", "local_branch",
    "param_labels", "qk_project", "set_local_chunk_sizes", "stage2_config", "tnt_mix",
    "tnt_mix_context_parallel", "trainable_filter", "unfold_shards",
]
