"""Classification metrics as plain JSON-ready numbers, and the Markdown results table.

Accuracy is the fraction of correct predictions; the reference printed the last row of sklearn's
classification report, which current scikit-learn makes the weighted F1.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support
from torch import nn
from torch.utils.data import DataLoader

from audiotext.inference.predict import predict


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro/weighted F1, per-class scores and the confusion matrix over class indices
    0..len(labels)-1 (rows true, columns predicted), classes absent from both sides included.

    A class with no true and no predicted clip scores 0 and still counts in the macro mean.
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    if len(y_true) == 0:
        raise ValueError("no predictions to score")
    classes = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, zero_division=0
    )
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=classes, average="weighted", zero_division=0)),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=classes).tolist(),
    }


def score_logits(logits: torch.Tensor, targets: torch.Tensor, labels: Sequence[str]) -> dict[str, Any]:
    """Classification metrics of logits (N, C) against targets (N,), plus the cross-entropy loss."""
    metrics = classification_metrics(targets.tolist(), logits.argmax(-1).tolist(), labels)
    metrics["loss"] = F.cross_entropy(logits, targets).item()
    return metrics


def evaluate_loss_and_metrics(
    model: nn.Module, loader: DataLoader, device: torch.device, labels: Sequence[str]
) -> dict[str, Any]:
    """`score_logits` of a classifier's predictions over a whole loader."""
    return score_logits(*predict(model, loader, device), labels)


def format_results_table(rows: Sequence[dict], labels: Sequence[str]) -> str:
    """Markdown table, one line per (model, test set): accuracy, macro-F1 and per-class F1 in %.

    Each row holds `model`, `test_set` and `metrics` (from `classification_metrics`), and may hold
    `partition` (how the corpus was split), which then gets a column of its own.
    """
    with_partition = any("partition" in row for row in rows)
    header = ["model", *(["split"] if with_partition else []), "test set", "n", "accuracy", "macro-F1",
              *(f"F1 {label}" for label in labels)]  # fmt: skip
    n_text = 3 if with_partition else 2
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * n_text + "---:|" * (len(header) - n_text)]
    for row in rows:
        m = row["metrics"]
        scores = [m["accuracy"], m["macro_f1"], *(m["per_class"][label]["f1"] for label in labels)]
        names = [row["model"], *([row.get("partition", "")] if with_partition else []), row["test_set"]]
        cells = [*map(str, names), str(m["n"]), *(f"{100 * s:.2f}" for s in scores)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
