"""YouTube-VIS evaluation: AP/AR identical to the official evaluator, result checks, splits, CodaLab zip.

    from sipvis.evaluation import evaluate
    r = evaluate("holdout.json", "results.json")
    r.stats          # 12 figures, official order (STAT_NAMES), -1 where undefined
    r.per_class      # {category name: AP}
    r.as_dict()      # JSON-ready

    t = evaluate_tracking_files("youtube-vis", "holdout.json", "results.json")  # HOTA, CLEAR, Identity
    t["combined"]["person"]["HOTA"]["mean_over_alphas"]["HOTA"]
    format_tracking_table(t)  # header row, then one row per class
"""

from sipvis.evaluation.codalab import make_codalab_zip
from sipvis.evaluation.schema import GroundTruth, Issue, IssueKind, parse_gt, \
    validate_results
from sipvis.evaluation.split import SplitResult, make_split, split_video_ids
from sipvis.evaluation.tracking import evaluate_tracking_files, format_tracking_table
from sipvis.evaluation.ytvis import STAT_NAMES, EvalResult, evaluate

__all__ = [
    "STAT_NAMES",
    "EvalResult",
    "GroundTruth",
    "Issue",
    "IssueKind",
    "SplitResult",
    "evaluate",
    "evaluate_tracking_files",
    "format_tracking_table",
    "make_codalab_zip",
    "make_split",
    "parse_gt",
    "split_video_ids",
    "validate_results",
]
