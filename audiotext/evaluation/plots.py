"""Figures with the Korean class names: confusion matrices, learning curves, per-class F1 bars.

Hangul comes from NanumGothic in the koreanize-matplotlib wheel, registered by file instead of by
importing that package: its import rewrites the global rcParams and needs `distutils`, which
Python 3.12 removed. Figures are built on `matplotlib.figure.Figure`, so pyplot (and its GUI
backend and global figure registry) is never involved.
"""

from __future__ import annotations

import io
import os
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from matplotlib import font_manager, rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from audiotext.io import atomic_path
from audiotext.resources import korean_font_path



@cache
def korean_font_family() -> str:
    """Registers the packaged NanumGothic with matplotlib once; returns its family name."""
    path = korean_font_path()
    font_manager.fontManager.addfont(str(path))
    return font_manager.FontProperties(fname=path).get_name()


@contextmanager
def korean_figure(width: float, height: float) -> Iterator[Figure]:
    # DejaVu Sans, matplotlib's own font, supplies what NanumGothic lacks (the minus sign, for one).
    with rc_context({"font.family": [korean_font_family(), "DejaVu Sans"]}):
        yield Figure(figsize=(width, height), layout="constrained")


def _row_fractions(counts: np.ndarray) -> np.ndarray:
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)  # empty rows stay blank


def _draw_confusion(ax, counts: np.ndarray, labels: Sequence[str], title: str, normalised: bool):
    """Cells shaded by the fraction of each true class, so rare classes read as clearly as common
    ones; written as counts, or as those fractions in % when `normalised`."""
    shade = _row_fractions(counts)
    image = ax.imshow(shade, cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = range(len(labels))
    ax.set(xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(labels)
    ax.set_yticklabels(labels)
    for i, j in np.ndindex(counts.shape):
        text = f"{100 * shade[i, j]:.0f}" if normalised else str(counts[i, j])
        ax.text(j, i, text, ha="center", va="center", color="white" if shade[i, j] > 0.5 else "black")
    return image


def _checked_counts(cm, labels: Sequence[str]) -> np.ndarray:
    counts = np.asarray(cm, dtype=int)
    if counts.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion matrix of shape {counts.shape} does not match {len(labels)} labels")
    return counts


def plot_confusion_matrix(
    cm: Sequence[Sequence[int]] | np.ndarray, labels: Sequence[str], path: str | os.PathLike, title: str = ""
) -> Path:
    """Writes a PNG of `cm` (rows true, columns predicted): counts in the cells, shaded by row."""
    counts = _checked_counts(cm, labels)
    side = 1.5 + 0.7 * len(labels)
    with korean_figure(side + 1.2, side) as fig:
        ax = fig.add_subplot()
        fig.colorbar(_draw_confusion(ax, counts, labels, title, normalised=False), ax=ax,
                     label="fraction of the true class")  # fmt: skip
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=150)
    return Path(path)


def confusion_pair_png(cm: Sequence[Sequence[int]] | np.ndarray, labels: Sequence[str], title: str) -> bytes:
    """PNG bytes: the counts beside the row-normalised matrix (% of each true class)."""
    counts = _checked_counts(cm, labels)
    side = 1.3 + 0.55 * len(labels)
    with korean_figure(2 * side, side + 0.3) as fig:
        fig.suptitle(title)
        left, right = fig.subplots(1, 2)
        _draw_confusion(left, counts, labels, "counts", normalised=False)
        _draw_confusion(right, counts, labels, "% of the true class", normalised=True)
        return _png(fig)


def learning_curves_png(rows: Sequence[dict], title: str) -> bytes:
    """PNG bytes: train and dev loss, and dev macro-F1, per epoch (rows of an epoch log)."""
    epochs = [r["epoch"] for r in rows]
    with korean_figure(9, 3.2) as fig:
        fig.suptitle(title)
        losses, f1 = fig.subplots(1, 2)
        losses.plot(epochs, [r["train_loss"] for r in rows], marker=".", label="train")
        if rows and rows[0].get("dev_loss") is not None:
            losses.plot(epochs, [r["dev_loss"] for r in rows], marker=".", label="dev")
        losses.set(xlabel="epoch", ylabel="loss", title="loss")
        losses.legend()
        if rows and rows[0].get("dev_macro_f1") is not None:
            f1.plot(epochs, [100 * r["dev_macro_f1"] for r in rows], marker=".", color="tab:green")
        f1.set(xlabel="epoch", ylabel="%", title="dev macro-F1")
        for ax in (losses, f1):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        return _png(fig)


def per_class_f1_png(f1: dict[str, dict[str, float]], labels: Sequence[str], title: str) -> bytes:
    """PNG bytes: grouped bars, one group per class, one bar per model ({model: {label: F1}})."""
    models = list(f1)
    width = 0.8 / max(len(models), 1)
    with korean_figure(max(7.0, 1.1 * len(labels) + 0.3 * len(models)), 3.6) as fig:
        ax = fig.add_subplot()
        x = np.arange(len(labels))
        for i, model in enumerate(models):
            ax.bar(x + (i - (len(models) - 1) / 2) * width, [100 * f1[model][label] for label in labels], width,
                   label=model)  # fmt: skip
        ax.set(xticks=x, ylabel="F1 (%)", title=title, ylim=(0, 100))
        ax.set_xticklabels(labels)
        ax.legend(fontsize="small", ncols=min(len(models), 4), loc="lower center", bbox_to_anchor=(0.5, 1.08))
        return _png(fig)


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()
