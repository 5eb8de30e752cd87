"""`audiotext compare` end to end on real speech: folds, seeds, intervals, the report."""

import base64
import io
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from fontTools.ttLib import TTFont

from audiotext.config import REFERENCE_LABELS

ROOT = Path(__file__).resolve().parents[1]


def compare(*args) -> str:
    result = subprocess.run([sys.executable, "-m", "audiotext.cli", "compare", "--resample_rate", "8000", "--quiet", *args],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def check_report(path: Path) -> str:
    """The page stands alone: every image inline and decodable, glyphs for every Korean label embedded."""
    page = path.read_text(encoding="utf-8")
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert all(base64.b64decode(s.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n" for s in sources)
    assert "http://" not in page and "https://" not in page
    font = re.search(r"url\(data:font/ttf;base64,([^)]+)\)", page)
    covered = TTFont(io.BytesIO(base64.b64decode(font.group(1)))).getBestCmap()
    assert all(ord(c) in covered for label in REFERENCE_LABELS for c in label)
    return page


@pytest.mark.slow
def test_compare_over_sentence_folds_tests_every_clip_once_per_seed(demo_corpora, tmp_path):
    corpus, out = demo_corpora["script"], tmp_path / "cmp"
    printed = compare("--data", str(corpus), "--out", str(out), "--models", "linear", "audio", "--seeds", "2",
                      "--folds", "3", "--split-by", "sentence", "--num_epochs", "1")  # fmt: skip
    n_clips = sum(len(pd.read_pickle(corpus / f"{s}.pkl")) for s in ("train", "dev", "test"))
    assert f"### test ({n_clips} clips)" in printed and "test_stt" not in printed
    tested = [pd.read_pickle(out / "folds" / f"fold{i}" / "test.pkl") for i in range(3)]
    assert sum(map(len, tested)) == n_clips
    for i, test in enumerate(tested):
        train = pd.read_pickle(out / "folds" / f"fold{i}" / "train.pkl")
        assert not set(test["Sentence"]) & set(train["Sentence"])

    summary = pd.read_csv(out / "comparison.csv")
    assert set(summary["model"]) == {"linear", "audio"} and (summary["runs"] == 2).all()
    assert ((summary["ci_low"] <= summary["mean"]) & (summary["mean"] <= summary["ci_high"])).all()
    paired = summary.dropna(subset=["paired_p"])
    assert len(paired) == 1 and paired["paired_p"].between(0, 1).all()  # the other model's macro-F1
    page = check_report(out / "report.html")
    assert "Paired tests of the best model" in page and "Learning curves" in page


def test_compare_tests_on_test_and_test_stt_and_writes_run_reports(demo_corpora, tmp_path):
    out = tmp_path / "cmp"
    printed = compare("--data", str(demo_corpora["script"]), "--out", str(out), "--models", "linear", "--seeds", "2")
    assert "### test (" in printed and "### test_stt (" in printed
    assert re.search(r"\| linear \| 2 \| \d+\.\d\d ± \d+\.\d\d \[\d+\.\d, \d+\.\d\]", printed)
    run_page = check_report(out / "runs" / "corpus" / "linear" / "seed1" / "report.html")
    assert "Learning curves" in run_page and "test_stt" in run_page
