"""The model as one ONNX graph for onnxruntime: padded features in, class probabilities out.

A model that reads encoder states carries its text encoder inside the graph (token ids in), so
onnxruntime alone runs everything after tokenising; n-gram models take the TF-IDF vector, audio
models the MFCC frames. Features and tokens are prepared by the same Python code as for PyTorch
(`EmotionRecognizer`), so the two backends differ only in the arithmetic of the graph: on the
demo corpus by under 1e-5 in any probability (tests/test_onnx.py checks 1e-4).

Inputs, by what the model reads (B batch, T frames, F values per frame, L tokens, V n-grams):
  audio (B, T, F) float32 and audio_mask (B, T) bool, True on real frames;
  input_ids and attention_mask (B, L) int64 (encoder states), or text (B, 1, V) float32 and
  text_mask (B, 1) bool (n-grams).
Output: probabilities (B, C) float32.

The graph encodes every sentence; a fine-tuned encoder folder's out-of-fold states for its own
training sentences (`features.text.TextEncoder`) are not in it, so only for those sentences does
it differ from PyTorch.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from audiotext.config import RunConfig
from audiotext.data.dataset import pad_streams
from audiotext.data.loading import reads_ngrams
from audiotext.errors import DataError
from audiotext.features.cache import as_stored
from audiotext.features.ngrams import CharNgramEncoder
from audiotext.features.text import TextEncoder, normalize_text, pad_token_ids

ONNX_FILE = "model.onnx"
OPSET = 18


class ProbabilityGraph(nn.Module):
    """What the ONNX graph computes: the classifier's softmax, with the encoder in front when the
    model reads encoder states."""

    def __init__(self, classifier: nn.Module, encoder: nn.Module | None) -> None:
        super().__init__()
        self.classifier, self.encoder = classifier, encoder

    def forward(self, audio=None, audio_mask=None, text=None, text_mask=None, input_ids=None, attention_mask=None):
        if input_ids is not None:
            text = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, E)
            text_mask = attention_mask.bool()
        return self.classifier(audio, audio_mask, text, text_mask).softmax(-1)  # (B, C)


def graph_inputs(cfg: RunConfig) -> list[str]:
    names = ["audio", "audio_mask"] if cfg.model.modality != "text" else []
    if cfg.model.modality != "audio":
        names += ["text", "text_mask"] if reads_ngrams(cfg) else ["input_ids", "attention_mask"]
    return names


def export_onnx(model: nn.Module, cfg: RunConfig, text_encoder, audio_width: int, path: Path) -> Path:
    """Writes the graph of `model` (eval mode) to `path`, batch, frames and tokens dynamic."""
    encoder = text_encoder.model if isinstance(text_encoder, TextEncoder) else None
    graph = ProbabilityGraph(model, encoder).eval()
    batch = torch.export.Dim("batch", min=1)
    # Exported at 2 clips; lengths above the kernel-3 projection's minimum, as real inputs are.
    frames, tokens = torch.export.Dim("frames", min=3), torch.export.Dim("tokens", min=3)
    sample = {"audio": torch.randn(2, 40, audio_width), "audio_mask": torch.ones(2, 40, dtype=torch.bool)}
    shapes = {"audio": {0: batch, 1: frames}, "audio_mask": {0: batch, 1: frames}}
    if encoder is not None:
        sample.update(input_ids=torch.full((2, 12), 100, dtype=torch.long), attention_mask=torch.ones(2, 12, dtype=torch.long))
        shapes.update(input_ids={0: batch, 1: tokens}, attention_mask={0: batch, 1: tokens})
    elif text_encoder is not None:
        vector = torch.rand(2, 1, text_encoder.hidden_size)
        sample.update(text=vector, text_mask=torch.ones(2, 1, dtype=torch.bool))
        shapes.update(text={0: batch}, text_mask={0: batch})
    names = graph_inputs(cfg)
    sample, shapes = {k: sample[k] for k in names}, {k: shapes[k] for k in names}
    # The exporter warns, once per op, that torchvision's detection ops cannot be registered:
    # we use none of them.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used")  # names shared by inputs
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch.export about its own internals
        torch.onnx.export(graph, (), str(path), kwargs=sample, input_names=names, output_names=["probabilities"],
                          dynamic_shapes=shapes, dynamo=True, external_data=False, opset_version=OPSET,
                          verbose=False)  # fmt: skip
    return path


class OnnxClassifier:
    """onnxruntime over a model folder's graph; `probabilities` takes what `EmotionRecognizer`
    prepares: per-clip features and sentences."""

    def __init__(self, path: Path, cfg: RunConfig, text_encoder: TextEncoder | CharNgramEncoder | None) -> None:
        import onnxruntime  # only this backend needs it

        if not path.is_file():
            raise FileNotFoundError(f"{path}: no ONNX graph; write one with audiotext export --onnx")
        # onnxruntime's threads spin for a while after each run, waiting for the next one; between
        # runs the features are computed (torch, numpy), which then fought them for the cores: a
        # 3-second clip of the demo `mult` took 100 ms p50 on 2 cores, 4.6 ms with spinning off.
        options = onnxruntime.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.text_encoder = text_encoder
        self.inputs = graph_inputs(cfg)
        found = [i.name for i in self.session.get_inputs()]
        if found != self.inputs:
            raise ValueError(f"{path}: the graph takes {found}, the model of its config.json needs {self.inputs}")

    def probabilities(self, audio: list[torch.Tensor | None], sentences: list[str] | None) -> np.ndarray:
        """(B, C) from per-clip features (T_i, F) (None each for a text-only model) and sentences."""
        text = [None] * len(audio)
        feeds = {}
        if sentences is not None and isinstance(self.text_encoder, TextEncoder):
            sentences = [normalize_text(s) for s in sentences]
            held_out = next((s for s in sentences if s in self.text_encoder.out_of_fold), None)
            if held_out is not None:
                # The graph runs the final encoder, which learnt this sentence's label; PyTorch reads
                # the out-of-fold state the model trained on. Refused rather than answered otherwise.
                raise DataError(f"{held_out!r} is a training sentence of the cross-fitted text encoder "
                                f"{self.text_encoder.path}: its out-of-fold features are not in the ONNX graph; "
                                "predict it with the PyTorch backend")  # fmt: skip
            tokenizer = self.text_encoder.tokenizer
            ids = tokenizer(sentences, truncation=True, max_length=self.text_encoder.max_len)["input_ids"]
            padded = pad_token_ids(tokenizer, ids)  # (B, L)
            feeds = {"input_ids": padded["input_ids"].numpy(), "attention_mask": padded["attention_mask"].numpy()}
        elif sentences is not None:
            text = [torch.from_numpy(as_stored(v)) for v in self.text_encoder.encode(sentences)]  # (1, V) each
        batch = pad_streams(audio, text)
        feeds.update({name: batch[name].numpy() for name in ("audio", "audio_mask", "text", "text_mask")
                      if name in self.inputs})  # fmt: skip
        return self.session.run(None, feeds)[0]
