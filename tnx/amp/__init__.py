"""Optimal retraining with noisy labels, analysed by approximate message passing.

Modules: `data` (GMM / GLM ground truths, label noise), `aggregators` (retraining targets,
Bayes-optimal ones included), `se` (state evolution), `amp` (Monte Carlo AMP iteration),
`probe` (practical cross-fitted linear-probe retraining with the cross-entropy loss).
"""

from tnx.amp import aggregators, amp, data, probe, se
from tnx.amp.aggregators import Aggregator
from tnx.amp.data import Problem, make_problem, problem_grid

__all__ = ["Aggregator", "Problem", "aggregators", "amp", "data", "make_problem", "probe",
           "problem_grid", "se"]
