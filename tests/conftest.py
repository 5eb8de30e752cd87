"""Shared fixtures: one small real demo corpus (espeak-ng speech) per test session, split both ways."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Features the CLI commands cache go to a folder of this session, not the user's cache, removed
# when the session ends (tens of MB a session otherwise left in /tmp).
if "AUDIOTEXT_CACHE" not in os.environ:
    os.environ["AUDIOTEXT_CACHE"] = tempfile.mkdtemp(prefix="audiotext-test-cache-")
    atexit.register(shutil.rmtree, os.environ["AUDIOTEXT_CACHE"], ignore_errors=True)

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


FAST_AUDIO = ["--resample_rate", "8000"]
FAST_LAYERS = ["--layers", "1"]
# Each with the fast settings it reads: `train` refuses one its model does not.
TRAINED_MODELS = {
    # MiniLM states: a text encoder to export
    "mult": ["--model", "mult", "--audio_features", "mfcc+prosody", *FAST_AUDIO, *FAST_LAYERS],
    "linear": ["--model", "linear", *FAST_AUDIO],  # character n-grams
    "audio": ["--model", "audio", *FAST_AUDIO, *FAST_LAYERS],
    "text": ["--model", "text"],  # MiniLM states, no audio
}


@pytest.fixture(scope="session")
def trained_runs(demo_corpus, tmp_path_factory) -> dict[str, Path]:
    """Small runs (2 epochs, one layer, MFCCs at 8 kHz) of four kinds on the clip split, each tested
    on `test` with features computed afresh (no cache), as a user's `audiotext test` would."""
    from audiotext.cli import main

    out = tmp_path_factory.mktemp("trained")
    common = ["--data_path", str(demo_corpus), "--output_dir", str(out), "--num_epochs", "2", "--quiet"]
    for name, flags in TRAINED_MODELS.items():
        main(["train", *common, "--name", name, *flags])
        main(["test", "--data_path", str(demo_corpus), "--output_dir", str(out), "--name", name, "--no_feature_cache",
              "--quiet"])  # fmt: skip
    return {name: out / name for name in TRAINED_MODELS}


@pytest.fixture
def cli_error(capsys):
    """Runs `audiotext ARGS...` in this process, expecting it to fail; returns its exit code and
    what it printed on stderr."""
    from audiotext.cli import main

    def run(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as failed:
            main([str(a) for a in argv])
        return failed.value.code, capsys.readouterr().err

    return run
