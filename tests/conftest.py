"""Shared fixtures: one small real demo corpus (espeak-ng speech) per test session."""

from pathlib import Path

import pytest

from audiotext.data.demo import build_demo_corpus


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory) -> Path:
    """Two speakers reading every demo script, clip split: 210 clips."""
    out = tmp_path_factory.mktemp("demo_corpus")
    build_demo_corpus(out, seed=0, split_by="clip", n_speakers=2, progress=False)
    return out
