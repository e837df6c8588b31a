"""Evaluation: multiple-choice accuracy (cloze and letter scoring) and held-out loss.

Evaluation FLOPs are counted for the shapes actually run and reported apart from training.
"""

from tokeff.eval.evaluation import Evaluation, evaluate
from tokeff.eval.intervals import binomial_stderr, wilson_interval
from tokeff.eval.loss import LossResult, examples_loss, heldout_loss
from tokeff.eval.multiple_choice import (
    METHODS,
    MCResult,
    evaluate_methods,
    evaluate_multiple_choice,
)
from tokeff.eval.result import EvalResult

__all__ = [
    "METHODS",
    "EvalResult",
    "Evaluation",
    "LossResult",
    "MCResult",
    "binomial_stderr",
    "evaluate",
    "evaluate_methods",
    "evaluate_multiple_choice",
    "examples_loss",
    "heldout_loss",
    "wilson_interval",
]
