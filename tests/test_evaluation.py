"""Evaluation: metrics on a hand-worked example, the Korean confusion-matrix PNG, the results table."""

from __future__ import annotations

import io
import json
import struct
import warnings

import pytest
from matplotlib import rc_context
from matplotlib.figure import Figure

from audiotext.config import REFERENCE_LABELS
from audiotext.evaluation.metrics import classification_metrics, format_results_table
from audiotext.evaluation.plots import korean_font_family, plot_confusion_matrix

LABELS = ["공포", "놀람", "분노"]
# Six clips of classes 0 and 1; class 2 (분노) is neither true nor predicted.
Y_TRUE = [0, 0, 0, 0, 1, 1]
Y_PRED = [0, 0, 0, 1, 1, 1]
# By hand: 공포 P 3/3 R 3/4 F1 6/7; 놀람 P 2/3 R 2/2 F1 4/5; 분노 all 0.


@pytest.fixture(scope="module")
def metrics() -> dict:
    return classification_metrics(Y_TRUE, Y_PRED, LABELS)


def test_metrics_on_a_hand_worked_example(metrics):
    assert metrics["n"] == 6
    assert metrics["accuracy"] == pytest.approx(5 / 6)
    # Not the accuracy: the reference printed this number as its accuracy.
    assert metrics["weighted_f1"] == pytest.approx((4 * 6 / 7 + 2 * 4 / 5) / 6)
    assert metrics["weighted_f1"] != pytest.approx(metrics["accuracy"])
    assert metrics["macro_f1"] == pytest.approx((6 / 7 + 4 / 5 + 0) / 3)
    per_class = metrics["per_class"]
    assert per_class["공포"] == pytest.approx({"precision": 1.0, "recall": 0.75, "f1": 6 / 7, "support": 4})
    assert per_class["놀람"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert per_class["분노"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_absent_class_keeps_its_row_and_column(metrics):
    assert metrics["confusion_matrix"] == [[3, 1, 0], [0, 2, 0], [0, 0, 0]]


def test_metrics_are_plain_json(metrics):
    assert json.loads(json.dumps(metrics)) == metrics
    assert type(metrics["accuracy"]) is float and type(metrics["per_class"]["공포"]["support"]) is int
    assert all(type(c) is int for row in metrics["confusion_matrix"] for c in row)


def test_metrics_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="5 true labels but 4 predictions"):
        classification_metrics([0] * 5, [0] * 4, LABELS)


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_confusion_matrix_png_renders_korean_without_missing_glyphs(tmp_path):
    labels = list(REFERENCE_LABELS)
    cm = [[10 * (i == j) + (i + j) % 3 for j in range(7)] for i in range(7)]
    cm[6] = [0] * 7  # a class absent from the test set: a blank row, no division by zero
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Glyph ... missing from font(s)" is a UserWarning
        out = plot_confusion_matrix(cm, labels, tmp_path / "eval" / "cm.png", title="교차 모달 · test")
    assert out == tmp_path / "eval" / "cm.png"
    width, height = png_size(out)
    assert 500 <= width <= 3000 and 500 <= height <= 3000
    assert [p.name for p in out.parent.iterdir()] == ["cm.png"]  # no temporary file left behind
    assert korean_font_family() == "NanumGothic"


def test_the_missing_glyph_check_has_teeth():
    # The same check fails with matplotlib's default font, which has no Hangul.
    with rc_context({"font.family": ["DejaVu Sans"]}), warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = Figure()
        fig.text(0.5, 0.5, "공포")
        with pytest.raises(UserWarning, match="missing from font"):
            fig.savefig(io.BytesIO(), format="png")


def test_plot_rejects_a_matrix_that_does_not_fit_the_labels(tmp_path):
    with pytest.raises(ValueError, match="does not match 3 labels"):
        plot_confusion_matrix([[1, 0], [0, 1]], LABELS, tmp_path / "cm.png")


def test_results_table(metrics):
    rows = [
        {"model": "cross-modal Transformer", "test_set": "test", "metrics": metrics},
        {"model": "audio-only Transformer", "test_set": "test_stt", "metrics": metrics},
    ]
    table = format_results_table(rows, LABELS)
    lines = table.splitlines()
    assert len(lines) == 4 and all(line.startswith("| ") or line.startswith("|-") for line in lines)
    assert all(label in lines[0] for label in LABELS)
    assert lines[2].split(" | ") == [
        "| cross-modal Transformer", "test", "6", "83.33", "55.24", "85.71", "80.00", "0.00 |"
    ]
    assert "| audio-only Transformer | test_stt |" in lines[3]


def test_results_table_gets_a_split_column_when_rows_name_their_partition(metrics):
    rows = [
        {"model": "text-only", "partition": "clip", "test_set": "test", "metrics": metrics},
        {"model": "text-only", "partition": "script (sentence-disjoint)", "test_set": "test_stt", "metrics": metrics},
    ]
    lines = format_results_table(rows, LABELS).splitlines()
    assert lines[0].startswith("| model | split | test set | n | accuracy |")
    assert lines[1] == "|---|---|---|" + "---:|" * (len(LABELS) + 3)
    assert lines[3].startswith("| text-only | script (sentence-disjoint) | test_stt | 6 | 83.33 | 55.24 |")
