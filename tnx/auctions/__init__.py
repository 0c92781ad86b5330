"""Position auctions for sponsored creatives inside AI-generated content.

MNL and cascade user models over a general (creative x position) CTR table, exact and
approximate allocation rules batched with `jit`/`vmap`, and truthful payments (VCG, Myerson
with ironed virtual values, reserve prices). See docs/auctions.md.
"""

from tnx.auctions.cascade import (
    METHODS,
    cascade_ctr,
    cascade_solve,
    cascade_value,
    cascade_vcg,
    continuation,
)
from tnx.auctions.enumerate import enumerate_allocations, num_allocations
from tnx.auctions.instances import (
    PRIORS,
    BimodalPrior,
    ExponentialPrior,
    Instances,
    UniformPrior,
    generate_ctr,
    generate_instances,
    get_prior,
    w_from_p,
)
from tnx.auctions.matching import kcard_matching, kcard_matching_milp, kcard_matching_scipy
from tnx.auctions.mnl import (
    mnl_ctr,
    mnl_heuristic,
    mnl_opt_bisection,
    mnl_opt_dinkelbach,
    mnl_opt_enum,
    mnl_opt_lp,
    mnl_opt_scipy,
    mnl_value,
)
from tnx.auctions.payments import mnl_mechanism, mnl_vcg
from tnx.auctions.virtual_values import (
    ScoreMap,
    apply_map,
    identity_map,
    inverse_map,
    ironed_virtual_value_map,
    monopoly_reserve,
    reserve_map,
)

__all__ = [
    "METHODS", "PRIORS", "BimodalPrior", "ExponentialPrior", "Instances", "ScoreMap",
    "UniformPrior", "apply_map", "cascade_ctr", "cascade_solve", "cascade_value", "cascade_vcg",
    "continuation", "enumerate_allocations", "generate_ctr", "generate_instances", "get_prior",
    "identity_map", "inverse_map", "ironed_virtual_value_map", "kcard_matching",
    "kcard_matching_milp", "kcard_matching_scipy", "mnl_ctr", "mnl_heuristic",
    "mnl_mechanism", "mnl_opt_bisection", "mnl_opt_dinkelbach", "mnl_opt_enum", "mnl_opt_lp",
    "mnl_opt_scipy", "mnl_value", "mnl_vcg", "monopoly_reserve", "num_allocations",
    "reserve_map", "w_from_p",
]
