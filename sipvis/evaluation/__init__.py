"""YouTube-VIS evaluation: AP/AR identical to the official evaluator, result checks, splits, CodaLab zip.

    from sipvis.evaluation import evaluate
    r = evaluate("valid_gt.json", "results.json")
    r.stats          # 12 figures, official order (STAT_NAMES)
    r.per_class      # {category name: AP}
    r.as_dict()      # JSON-ready
"""

from sipvis.evaluation.schema import GroundTruth, Issue, load_json, parse_gt, validate_results
from sipvis.evaluation.ytvis import STAT_NAMES, EvalResult, evaluate

__all__ = [
    "STAT_NAMES",
    "EvalResult",
    "GroundTruth",
    "Issue",
    "evaluate",
    "load_json",
    "parse_gt",
    "validate_results",
]
