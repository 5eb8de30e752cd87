"""ONNX export: onnxruntime gives PyTorch's probabilities on real clips, for every kind of text input."""

import shutil

import numpy as np
import pandas as pd
import pytest

from audiotext.errors import DataError
from audiotext.inference.export import export_model
from audiotext.inference.onnx_graph import ONNX_FILE
from audiotext.inference.recognizer import EmotionRecognizer

# Float32 graphs reorder sums (fused attention, folded constants); on these clips the largest
# difference seen was 2e-6. 1e-4 is far below any gap between two classes that matters.
TOLERANCE = 1e-4


@pytest.mark.parametrize("kind", ["mult", "linear", "audio"])  # encoder in the graph, n-grams, audio only
def test_onnxruntime_matches_pytorch_on_test_clips(kind, trained_runs, demo_corpus, tmp_path):
    folder = export_model(trained_runs[kind], tmp_path / kind, onnx=True)
    assert (folder / ONNX_FILE).stat().st_size > 0
    test = pd.read_pickle(demo_corpus / "test.pkl")
    rows = list(range(0, len(test), 5))
    clips = [{"raw": test["audio"].iloc[i], "sampling_rate": 48000} for i in rows]
    texts = list(test["Sentence"].iloc[rows])

    torch_probabilities = EmotionRecognizer.from_pretrained(folder, device="cpu").predict_proba(clips, texts, batch_size=8)
    onnx_probabilities = EmotionRecognizer.from_pretrained(folder, backend="onnx").predict_proba(clips, texts, batch_size=8)
    assert onnx_probabilities.shape == (len(rows), 7)
    np.testing.assert_allclose(onnx_probabilities, torch_probabilities, atol=TOLERANCE)
    assert np.array_equal(onnx_probabilities.argmax(1), torch_probabilities.argmax(1))


def test_the_onnx_backend_runs_only_a_model_folders_checked_graph(trained_runs, tmp_path):
    run = shutil.copytree(trained_runs["linear"], tmp_path / "linear")
    folder = export_model(run, tmp_path / "model", onnx=True)
    # A graph put in a run folder is checked against nothing: another model's with the same inputs
    # (two n-gram models) ran, and answered for this run.
    shutil.copy(folder / ONNX_FILE, run / ONNX_FILE)
    with pytest.raises(DataError, match=f"^{run}: the ONNX backend runs the graph of a model folder, not a run folder"):
        EmotionRecognizer.from_pretrained(run, backend="onnx")
