"""Influence Distillation (Nikdan et al., arXiv 2505.19051): second-order, target-aware data
selection with landmark-propagated influences, for any JAX loss and parameter pytree.

Modules: grads (per-example gradients over a parameter subset, chunked and sharded), sketch
(Rademacher and SRHT projections), optimizer (the next optax step's affine form: GD, SGD with
momentum, Adam/AdamW), scores (first/second-order influences and Taylor predictions), weights
(robust simplex weights, L2 strength searched for k non-zeros, the QP), jvp (JVP embeddings),
landmarks (random / k-means++ / farthest point), krr (kernel ridge propagation), targets
(mean target and round-robin), pipeline (the `select` entry point).
"""

from tnx.selection.influence.grads import (
    ParamSubset,
    example_mapper,
    flat_hvp_fn,
    mean_loss_fn,
    per_example_grad_fn,
    per_example_grads,
    subset_mask_from_filter,
)
from tnx.selection.influence.jvp import jvp_embedding_fn, jvp_embeddings, lm_prefix_features
from tnx.selection.influence.krr import fit_krr, krr_propagate, propagate
from tnx.selection.influence.landmarks import choose_landmarks
from tnx.selection.influence.optimizer import (
    AffineStep,
    adam_affine,
    affine_from_optax,
    gd_affine,
    sgd_affine,
)
from tnx.selection.influence.pipeline import (
    PreparedPool,
    Selection,
    SelectionConfig,
    prepare,
    select,
    select_prepared,
)
from tnx.selection.influence.sketch import RademacherSketch, SRHTSketch, make_sketch
from tnx.selection.influence.targets import round_robin
from tnx.selection.influence.weights import (
    first_order_weights,
    project_scaled_simplex,
    qp_weights,
    robust_first_order,
    robust_qp,
)

__all__ = [
    "AffineStep", "ParamSubset", "PreparedPool", "RademacherSketch", "SRHTSketch", "Selection",
    "SelectionConfig", "adam_affine", "affine_from_optax", "choose_landmarks",
    "example_mapper", "first_order_weights", "fit_krr", "flat_hvp_fn", "gd_affine",
    "jvp_embedding_fn", "jvp_embeddings", "krr_propagate", "lm_prefix_features",
    "make_sketch", "mean_loss_fn", "per_example_grad_fn", "per_example_grads", "prepare",
    "project_scaled_simplex", "propagate", "qp_weights", "robust_first_order", "robust_qp",
    "round_robin", "select", "select_prepared", "sgd_affine", "subset_mask_from_filter",
]
