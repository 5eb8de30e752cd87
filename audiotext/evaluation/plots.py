"""Confusion-matrix figures with the Korean class names.

Hangul comes from NanumGothic in the koreanize-matplotlib wheel, registered by file instead of by
importing that package: its import rewrites the global rcParams and needs `distutils`, which
Python 3.12 removed. Figures are built on `matplotlib.figure.Figure`, so pyplot (and its GUI
backend and global figure registry) is never involved.
"""

from __future__ import annotations

import importlib.util
import os
from functools import cache
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib import font_manager, rc_context
from matplotlib.figure import Figure

from audiotext.io import atomic_path

FONT_PACKAGE = "koreanize_matplotlib"
FONT_FILE = "NanumGothic.ttf"


@cache
def korean_font_family() -> str:
    """Registers the packaged NanumGothic with matplotlib once; returns its family name."""
    spec = importlib.util.find_spec(FONT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"Korean labels need the font shipped by {FONT_PACKAGE}: pip install koreanize-matplotlib"
        )
    path = Path(spec.submodule_search_locations[0]) / "fonts" / FONT_FILE
    font_manager.fontManager.addfont(str(path))
    return font_manager.FontProperties(fname=path).get_name()


def plot_confusion_matrix(
    cm: Sequence[Sequence[int]] | np.ndarray, labels: Sequence[str], path: str | os.PathLike, title: str = ""
) -> Path:
    """Writes a PNG of `cm` (rows true, columns predicted): counts in the cells, shading by the
    fraction of each true class, so rare classes read as clearly as common ones."""
    counts = np.asarray(cm, dtype=int)
    if counts.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion matrix of shape {counts.shape} does not match {len(labels)} labels")
    totals = counts.sum(axis=1, keepdims=True)
    shade = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)  # empty rows stay blank

    side = 1.5 + 0.7 * len(labels)
    # DejaVu Sans, matplotlib's own font, supplies what NanumGothic lacks (the minus sign, for one).
    with rc_context({"font.family": [korean_font_family(), "DejaVu Sans"]}):
        fig = Figure(figsize=(side + 1.2, side), layout="constrained")
        ax = fig.add_subplot()
        image = ax.imshow(shade, cmap="Blues", vmin=0.0, vmax=1.0)
        fig.colorbar(image, ax=ax, label="fraction of the true class")
        ticks = range(len(labels))
        ax.set(xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="true", title=title)
        ax.set_xticklabels(labels)
        ax.set_yticklabels(labels)
        for i, j in np.ndindex(counts.shape):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", color="white" if shade[i, j] > 0.5 else "black")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=150)
    return Path(path)
