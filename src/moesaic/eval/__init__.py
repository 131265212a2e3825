"""``moesaic eval``: compare models on accuracy, latency, memory and cost; metrics are pure functions."""

from moesaic.eval.config import EvalConfig, EvalDataset, EvalModel, JudgeConfig
from moesaic.eval.matching import contains_match, relaxed_numeric
from moesaic.eval.metrics import anls, attribute_accuracy, exact_match, normalized_match, token_f1
from moesaic.eval.results import EvalResult, ModelResult
from moesaic.eval.run import evaluate

__all__ = [
    "EvalConfig",
    "EvalDataset",
    "EvalModel",
    "EvalResult",
    "JudgeConfig",
    "ModelResult",
    "anls",
    "attribute_accuracy",
    "contains_match",
    "evaluate",
    "exact_match",
    "normalized_match",
    "relaxed_numeric",
    "token_f1",
]
