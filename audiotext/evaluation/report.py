"""report.html: one self-contained page per run and per comparison, to open in any browser or mail.

Figures are inline PNGs and the page carries the glyphs of its own text (a subset of NanumGothic,
a few kilobytes), so Korean class names render on a machine without a Korean font and nothing is
fetched from anywhere.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from pathlib import Path
from typing import Sequence

from fontTools import subset

from audiotext.evaluation.plots import confusion_pair_png, learning_curves_png, per_class_f1_png
from audiotext.io import atomic_path
from audiotext.models.checkpoint import EPOCH_LOG, load_config, tested_as, tested_splits
from audiotext.resources import korean_web_font

REPORT_FILE = "report.html"
NUMERIC, BEST = ' class="n"', ' class="best"'
_STYLE = """
body { font-family: NanumGothicSubset, "Noto Sans CJK KR", sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.6em 0 1.4em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f2f4f7; }
tr.best td { font-weight: bold; }
img { max-width: 100%; margin: 0.4em 0 1em; }
.note { color: #555; font-size: 0.92em; }
"""


def image(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def table(header: Sequence[str], rows: Sequence[Sequence[object]], bold_rows: Sequence[int] = ()) -> str:
    """An HTML table; numbers (already formatted as text or not) are right-aligned."""

    def cell(value: object, tag: str) -> str:
        text = str(value)
        numeric = tag == "td" and text.lstrip("+-")[:1].isdigit()
        return f"<{tag}{NUMERIC if numeric else ''}>{html.escape(text)}</{tag}>"

    lines = ["<table>", "<tr>" + "".join(cell(h, "th") for h in header) + "</tr>"]
    for i, row in enumerate(rows):
        lines.append(f"<tr{BEST if i in bold_rows else ''}>" + "".join(cell(v, "td") for v in row) + "</tr>")
    return "\n".join(lines + ["</table>"])


def write_report(path: str | Path, title: str, sections: Sequence[str]) -> Path:
    """Writes the page atomically: `title`, then the HTML `sections` in order."""
    body = "\n".join([f"<h1>{html.escape(title)}</h1>", *sections])
    page = (
        '<!DOCTYPE html>\n<html lang="ko"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_font_face(body)}{_STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return Path(path)


def _font_face(text: str) -> str:
    """An @font-face holding only the glyphs of the non-ASCII characters of `text`."""
    characters = "".join(sorted({c for c in text if ord(c) > 127}))
    if not characters:
        return ""
    font = korean_web_font()
    subsetter = subset.Subsetter(subset.Options())
    subsetter.populate(text=characters)
    subsetter.subset(font)
    buffer = io.BytesIO()
    font.save(buffer)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f"@font-face {{ font-family: NanumGothicSubset; src: url(data:font/ttf;base64,{data}) format('truetype'); }}\n"


def read_epoch_log(path: str | Path) -> list[dict]:
    """Rows of an epoch CSV with numbers as floats (empty cells None)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(f)]


def write_run_report(run_dir: str | Path) -> Path:
    """run_dir/report.html: settings, learning curves, and for each tested split (eval/<split>/)
    its figures, confusion matrices and per-class F1."""
    run_dir = Path(run_dir)
    cfg, _ = load_config(run_dir)
    sections = [
        f"<p>Model <b>{html.escape(cfg.model.modality)}</b> on <code>{html.escape(cfg.data_path)}</code>, "
        f"seed {cfg.train.seed}; classes: {html.escape(', '.join(cfg.labels))}.</p>"
    ]
    if (run_dir / EPOCH_LOG).is_file():
        sections += ["<h2>Learning curves</h2>", image(learning_curves_png(read_epoch_log(run_dir / EPOCH_LOG), cfg.name), "learning curves")]
    evaluations = tested_splits(run_dir, cfg)
    if evaluations:
        sections += [
            "<h2>Test figures</h2>",
            table(["split", "of", "n", "accuracy", "macro-F1", "weighted-F1"],
                  [[tested_as(split, m, cfg), m.get("data", "?"), m["n"],
                    *(f"{100 * m[k]:.2f}" for k in ("accuracy", "macro_f1", "weighted_f1"))]
                   for split, m in evaluations.items()]),  # fmt: skip
            image(per_class_f1_png({split: {label: m["per_class"][label]["f1"] for label in cfg.labels}
                                    for split, m in evaluations.items()}, cfg.labels, "F1 per class"), "per-class F1"),  # fmt: skip
        ]
        for split, m in evaluations.items():
            sections.append(image(confusion_pair_png(m["confusion_matrix"], cfg.labels, f"{cfg.name} · {split}"),
                                  f"confusion matrices, {split}"))  # fmt: skip
    else:
        sections.append('<p class="note">Not tested yet: <code>audiotext test</code> adds the test figures here.</p>')
    return write_report(run_dir / REPORT_FILE, f"audiotext run {cfg.name}", sections)
