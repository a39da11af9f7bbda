"""report.json's verdict: which classes the decision found poisoned, from the reasons."""

from __future__ import annotations

import pyarrow as pa

from sanitize.config import DecisionConfig, SanitizeConfig
from sanitize.data.schema import FLAGGED, LABEL, REASONS
from sanitize.report.summary import build_report


def _report(labels, flagged, reasons, config=None, decision_info=None):
    table = pa.table(
        {
            LABEL: pa.array(labels, type=pa.int64()),
            FLAGGED: pa.array(flagged),
            REASONS: pa.array(reasons, type=pa.list_(pa.string())),
        }
    )
    return build_report(
        source="mem://x",
        config=config or SanitizeConfig(),
        decision=table,
        detector_info={"spectral": {}, "spectre": {}},
        decision_info=decision_info or {},
        classes={"values": [0, 1, 2, 3], "names": ["zero", "one", "two", "three"]},
        stage_results={},
    )


def test_verdict_counts_every_detection_reason_and_names_the_biggest_class_first():
    labels = [0] * 3 + [1] * 4 + [2] * 2 + [3] * 2
    reasons = (
        [["spectral"], [], []]
        + [["consensus:spectre"], ["refine"], ["spectre", "spectral"], []]
        + [["unreadable"], []]
        + [[], []]
    )
    flagged = [bool(r) for r in reasons]
    one_row_groups = SanitizeConfig(
        decision=DecisionConfig(
            min_class_rows=1, rules=("orient", "size_orient", "growth", "settled")
        )
    )
    verdict = _report(labels, flagged, reasons, one_row_groups)["verdict"]
    assert verdict["poison_suspected"]
    assert [c["label"] for c in verdict["suspect_classes"]] == ["1", "0"]
    assert [c["removed"] for c in verdict["suspect_classes"]] == [3, 1]
    assert verdict["text"] == "poisoning suspected in class(es) one (3 removed), zero (1 removed)"


def test_quarantine_alone_is_not_poisoning():
    reasons = [["unreadable"], ["missing_label"], [], []]
    verdict = _report([0, 1, 2, 3], [True, True, False, False], reasons)["verdict"]
    assert not verdict["poison_suspected"] and verdict["suspect_classes"] == []
    assert verdict["text"].startswith("no poisoning found")


def test_a_class_is_a_suspect_only_when_it_lost_a_group():
    # Class 0 lost 12 rows (a group), class 1 two outliers; with only the outliers, the set
    # reads as clean (a clean GTSRB subset lost 7 rows of one class to activation clustering).
    labels = [0] * 20 + [1] * 20
    reasons = [["spectral"]] * 12 + [[]] * 8 + [["spectre"]] * 2 + [[]] * 18
    flagged = [bool(r) for r in reasons]
    verdict = _report(labels, flagged, reasons)["verdict"]
    assert [c["label"] for c in verdict["suspect_classes"]] == ["0"]
    assert verdict["outliers_removed"] == 2
    assert verdict["text"] == (
        "poisoning suspected in class(es) zero (12 removed); 2 outlier row(s) removed elsewhere"
    )
    only_outliers = [[]] * 20 + reasons[20:]
    verdict = _report(labels, [bool(r) for r in only_outliers], only_outliers)["verdict"]
    assert not verdict["poison_suspected"] and verdict["suspect_classes"] == []
    assert verdict["text"] == (
        "no poisoning found: 2 outlier row(s) removed, no class lost 10 or more"
    )


def test_a_class_lost_mostly_to_the_size_rules_without_expected_counts_is_named():
    # Class 0 lost 14 rows, 12 of them to the size rules; class 1 lost 12 to a detector.
    labels = [0] * 20 + [1] * 20
    reasons = [["class_size"]] * 12 + [["refine"]] * 2 + [[]] * 6
    reasons += [["spectral"]] * 12 + [[]] * 8
    flagged = [bool(r) for r in reasons]
    by_sizes = {"size_orient": {"expected_shares": False}}
    verdict = _report(labels, flagged, reasons, decision_info=by_sizes)["verdict"]
    assert verdict["judged_by_size"] == ["0"]
    assert verdict["text"].endswith(
        "; zero judged mostly by size against the other classes: if naturally that large, "
        "give the class counts to expect (--expected-classes)"
    )
    # Measured against a distribution the user gave, the size is evidence: no caveat.
    by_shares = {"size_orient": {"expected_shares": True}}
    verdict = _report(labels, flagged, reasons, decision_info=by_shares)["verdict"]
    assert verdict["judged_by_size"] == [] and "expected-classes" not in verdict["text"]
