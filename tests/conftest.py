"""Shared fixtures: one small real demo corpus (espeak-ng speech) per test session, split both ways."""

from pathlib import Path

import pytest

from audiotext.data.demo import build_demo_corpora


@pytest.fixture(scope="session")
def demo_corpora(tmp_path_factory) -> dict[str, Path]:
    """Two speakers reading every demo script (700 clips), synthesised once and split by clip and by script."""
    out = tmp_path_factory.mktemp("demo_corpus")
    folders = {"clip": out / "clip", "script": out / "script"}
    build_demo_corpora(folders, seed=0, n_speakers=2, progress=False)
    return folders


@pytest.fixture(scope="session")
def demo_corpus(demo_corpora) -> Path:
    """The clip split: every sentence is read by both speakers, so most test sentences are also in train."""
    return demo_corpora["clip"]
