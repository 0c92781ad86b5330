"""XMAS: data selection for vision-language fine-tuning from cross-modal alignment trajectories
(Naharas, Nguyen, Bulut, Bateni, Mirrokni, Mirzasoleiman, arXiv 2510.01454).

Modules: `attention` (cross-modal blocks from sown attention), `spectral` (top-K singular
values, stability), `trajectory` (streamed, sharded extraction over checkpoints), `sample`
(balanced stability-first sampling), `pipeline` (`select` and `XMASConfig`), `baselines`
(random, family-stratified, loss score, embedding clusters), `data` (ShapesVQA), `model` (a
small vision-language decoder), `finetune` (training with tnx.train, evaluation).
"""

from tnx.selection.xmas.pipeline import Selection, XMASConfig, select, select_from_values

__all__ = ["Selection", "XMASConfig", "select", "select_from_values"]
