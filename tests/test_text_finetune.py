"""The text-only baseline on the real demo corpus: fine-tuning the packaged MiniLM beats chance
clearly, the test writes the same outputs as the other models' tests (per clip, test and test_stt),
and the fine-tuned directory is a TextEncoder the cross-modal model can use."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from audiotext.config import REFERENCE_LABELS
from audiotext.data.corpus import load_split
from audiotext.errors import DataError
from audiotext.evaluation.evaluate import evaluate_text_classifier
from audiotext.features.text import TextEncoder, normalize_text
from audiotext.inference.predict import predict_sentences
from audiotext.models.checkpoint import HEAD_CONFIG, HEAD_WEIGHTS, load_text_classifier
from audiotext.training.text_classifier import finetune

CHANCE = 1 / len(REFERENCE_LABELS)


@pytest.fixture(scope="module")
def finetuned(demo_corpus, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("finetune") / "text_classifier"
    # Clip split: most test sentences were read by the other speaker in train, as in the reference.
    metrics = finetune(demo_corpus, None, out, epochs=8, lr=2e-4, batch_size=16, max_len=32, seed=0, progress=False)
    return out, metrics


def test_trains_on_distinct_sentences(demo_corpus, finetuned):
    _, metrics = finetuned
    train = load_split(demo_corpus / "train.pkl", REFERENCE_LABELS)
    assert metrics["train_clips"] == len(train)
    assert metrics["train_sentences"] == len(set(zip(train.sentences, train.labels.tolist()))) < len(train)
    assert metrics["pooling"] == "pooler"  # the MiniLM checkpoint ships pooler weights


def test_text_test_tests_every_split_before_writing_one(demo_corpus, finetuned, tmp_path, cli_error):
    model_dir, _ = finetuned
    unknown = pd.read_pickle(demo_corpus / "dev.pkl")
    unknown.loc[0, "Emotion"] = "기쁨"
    unknown.to_pickle(tmp_path / "unknown.pkl")
    code, printed = cli_error("text", "test", "--model", model_dir, "--data_path", demo_corpus, "--split", "test",
                              tmp_path / "unknown.pkl", "--eval_dir", tmp_path / "eval")  # fmt: skip
    assert code == 1 and "unknown label '기쁨'" in printed
    assert not (tmp_path / "eval").exists()  # the first split's results were written before the second failed


@pytest.mark.parametrize("split", ["test", "test_stt"])
def test_beats_chance_and_writes_the_evaluation_outputs(demo_corpus, finetuned, tmp_path, split):
    model_dir, _ = finetuned
    metrics = evaluate_text_classifier(model_dir, demo_corpus, split, tmp_path)
    clips = load_split(demo_corpus / f"{split}.pkl", REFERENCE_LABELS)
    assert metrics["n"] == len(clips)  # per clip, as the audio and cross-modal tests count
    # Fine-tuning MiniLM on 560 sentences for 8 epochs is a lottery: over seeds and batch orders
    # (one change of how often an epoch's order is drawn moved this seed from 67% to 39%) test
    # accuracy ran from 26% to 80%. The floors ask for clearly above chance (14.3%), not for a good run.
    floor = 2 * CHANCE if split == "test" else 1.5 * CHANCE  # transcripts are noisier
    assert metrics["accuracy"] > floor and metrics["macro_f1"] > floor - 0.05
    assert json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))["macro_f1"] == metrics["macro_f1"]
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    probabilities = [f"p_{label}" for label in REFERENCE_LABELS]
    assert list(predictions.columns) == ["id", "sentence", "prediction", *probabilities, "true_value"]
    assert predictions[probabilities].sum(axis=1).to_numpy() == pytest.approx(1, abs=1e-4)
    assert len(predictions) == len(clips)
    assert set(predictions["prediction"]) <= set(REFERENCE_LABELS)
    assert (tmp_path / "confusion_matrix.png").read_bytes().startswith(b"\x89PNG")


def test_directory_is_safetensors_and_loads_as_text_encoder(finetuned):
    model_dir, _ = finetuned
    assert (model_dir / "model.safetensors").is_file() and not list(model_dir.glob("*.bin"))
    assert set(load_file(model_dir / HEAD_WEIGHTS)) == {"weight", "bias"}
    info = json.loads((model_dir / HEAD_CONFIG).read_text(encoding="utf-8"))
    assert info["labels"] == list(REFERENCE_LABELS)

    encoder = TextEncoder(model_dir, max_len=32)
    tokenizer, classifier, _ = load_text_classifier(model_dir)
    sentence = "와 정말 신난다 오늘 최고의 날이야!"
    state = encoder.encode([sentence], progress=False)[0]  # (L, 384)
    batch = tokenizer([normalize_text(sentence)], truncation=True, max_length=32, return_tensors="pt")
    with torch.inference_mode():
        expected = classifier.encoder(**batch).last_hidden_state[0]
    assert state.shape == (batch["input_ids"].shape[1], 384)
    torch.testing.assert_close(state, expected, rtol=0, atol=1e-5)


def test_predictions_do_not_depend_on_batching(finetuned):
    model_dir, _ = finetuned
    tokenizer, classifier, info = load_text_classifier(model_dir)
    sentences = ["시험 결과가 방금 나왔어요.", "너무 무서워", "정말 화가 나!", "너무 무서워"]
    together = predict_sentences(tokenizer, classifier, sentences, info["max_len"], batch_size=3)
    alone = torch.cat([predict_sentences(tokenizer, classifier, [s], info["max_len"]) for s in sentences])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)


def test_a_directory_without_head_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="classifier.json"):
        load_text_classifier(tmp_path)


def test_bad_arguments_are_refused(demo_corpus, tmp_path):
    with pytest.raises(ValueError, match="epochs"):
        finetune(demo_corpus, None, tmp_path / "m", epochs=0, progress=False)
    with pytest.raises(ValueError, match="pooling"):
        finetune(demo_corpus, None, tmp_path / "m", epochs=1, pooling="max", progress=False)
    # Refused before the job's state folder is made (the optimizer refused a rate of -1 after it).
    for setting, message in [({"lr": -1.0}, "lr must be positive and finite"), ({"max_len": 0}, "max_len must leave room"),
                             ({"clip": -1.0}, r"clip must be 0 \(off\) or a gradient norm"), ({"max_len": 1000}, r"max_len 1000 is longer .* \(512 positions\)")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            finetune(demo_corpus, None, tmp_path / "m", epochs=1, progress=False, **setting)
    assert not list(tmp_path.iterdir())


def test_a_cut_head_is_named(finetuned, tmp_path):
    model_dir = Path(shutil.copytree(finetuned[0], tmp_path / "cut"))
    head = (model_dir / HEAD_WEIGHTS).read_bytes()
    (model_dir / HEAD_WEIGHTS).write_bytes(head[: len(head) // 2])
    with pytest.raises(DataError, match=f"{HEAD_WEIGHTS}: not this classifier's head"):  # a SafetensorError before
        load_text_classifier(model_dir)
