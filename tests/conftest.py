"""Shared fixtures: one small real demo corpus (espeak-ng speech) per test session, split both ways."""

import os
import tempfile
from pathlib import Path

import pytest

# Features the CLI commands cache go to a folder of this session, not the user's cache.
os.environ.setdefault("AUDIOTEXT_CACHE", tempfile.mkdtemp(prefix="audiotext-test-cache-"))

from audiotext.data.synthesis import build_demo_corpora


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
