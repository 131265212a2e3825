"""``moesaic eval``: compare models on accuracy, latency, memory and cost; metrics are pure functions."""

from moesaic.eval.config import EvalConfig, EvalDataset, EvalModel
from moesaic.eval.metrics import anls, attribute_accuracy, exact_match, normalized_match, token_f1
from moesaic.eval.results import EvalResult, ModelResult
from moesaic.eval.run import evaluate

__all__ = [
    "EvalConfig",
    "EvalDataset",
    "EvalModel",
    "EvalResult",
    "ModelResult",
    "anls",
    "attribute_accuracy",
    "evaluate",
    "exact_match",
    "normalized_match",
    "token_f1",
]
