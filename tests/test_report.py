"""report.json's verdict: which classes the decision found poisoned, from the reasons."""

from __future__ import annotations

import pyarrow as pa

from sanitize.config import SanitizeConfig
from sanitize.data.schema import FLAGGED, LABEL, REASONS
from sanitize.report import build_report


def _report(labels, flagged, reasons):
    table = pa.table(
        {
            LABEL: pa.array(labels, type=pa.int64()),
            FLAGGED: pa.array(flagged),
            REASONS: pa.array(reasons, type=pa.list_(pa.string())),
        }
    )
    return build_report(
        source="mem://x",
        config=SanitizeConfig(),
        decision=table,
        detector_info={"spectral": {}, "spectre": {}},
        decision_info={},
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
    verdict = _report(labels, flagged, reasons)["verdict"]
    assert verdict["poison_suspected"]
    assert [c["label"] for c in verdict["suspect_classes"]] == ["1", "0"]
    assert [c["removed"] for c in verdict["suspect_classes"]] == [3, 1]
    assert verdict["text"] == "poisoning suspected in class(es) one (3 removed), zero (1 removed)"


def test_quarantine_alone_is_not_poisoning():
    reasons = [["unreadable"], ["missing_label"], [], []]
    verdict = _report([0, 1, 2, 3], [True, True, False, False], reasons)["verdict"]
    assert not verdict["poison_suspected"] and verdict["suspect_classes"] == []
    assert verdict["text"].startswith("no poisoning found")
