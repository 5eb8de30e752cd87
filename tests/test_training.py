"""Training on real speech: it learns, it repeats itself under a seed, and checkpoints round-trip."""

import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from audiotext.config import AudioConfig, ModelConfig, RunConfig, TextConfig, TrainConfig
from audiotext.data.dataset import collate
from audiotext.data.loading import load_encoded, make_loader, text_encoder_for
from audiotext.data.manifest import load_any_split
from audiotext.evaluation.evaluate import evaluate
from audiotext.features.ngrams import CharNgramEncoder
from audiotext.features.text import normalize_text
from audiotext.models.checkpoint import FINISHED_FILE, load_run, save_config, save_weights
from audiotext.models.classifiers import Dims, build_model
from audiotext.training.loop import train

CHANCE = 1 / 7


def small_config(demo_corpus, modality="cross", **train_overrides) -> RunConfig:
    return RunConfig(
        name=modality,
        data_path=str(demo_corpus),
        audio=AudioConfig(resample_rate=8000),
        model=ModelConfig(modality=modality, layers=2, attn_dropout=0.0, out_dropout=0.1),
        train=replace(TrainConfig(num_epochs=12, when=3, logging_steps=5), **train_overrides),
    )


@pytest.fixture(scope="module")
def trained_cross(demo_corpus, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "cross"
    results = run_dir.parent / "results.csv"
    summary = train(small_config(demo_corpus), run_dir, results_csv=results, progress=False)
    return run_dir, results, summary


@pytest.mark.slow
def test_short_cross_modal_run_beats_chance_clearly(trained_cross, demo_corpus):
    run_dir, _, summary = trained_cross
    metrics = evaluate(run_dir, "test", demo_corpus, progress=False)
    assert metrics["accuracy"] > 3 * CHANCE, metrics
    assert summary["dev_accuracy"] > 3 * CHANCE


def test_run_directory_holds_config_weights_logs_and_results_row(trained_cross):
    run_dir, results, summary = trained_cross
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    assert config["model"]["modality"] == "cross" and config["dims"]["text"] == 384
    assert (run_dir / "model.safetensors").stat().st_size > 0
    epochs = pd.read_csv(run_dir / "epochs.csv")
    assert list(epochs["epoch"]) == list(range(1, 13))
    assert epochs["dev_loss"].min() == pytest.approx(summary["dev_loss"])
    assert epochs["train_loss"].iloc[-1] < epochs["train_loss"].iloc[0]
    table = pd.read_csv(results)
    assert len(table) == 1 and table.loc[0, "name"] == "cross" and table.loc[0, "lr"] == 1e-3


def test_test_stt_is_scored_on_its_own_transcripts(trained_cross, demo_corpus, tmp_path):
    """The same clips with the recogniser's transcripts: a clip whose transcript is the same gets the
    same probabilities, and most whose transcript differs get others (a confident model may not
    move on a small change)."""
    run_dir, _, _ = trained_cross
    for split in ("test", "test_stt"):
        evaluate(run_dir, split, demo_corpus, tmp_path / split, progress=False)
    read = {split: pd.read_csv(tmp_path / split / "predictions.csv").filter(like="p_").to_numpy() for split in ("test", "test_stt")}
    said = [normalize_text(s) for s in pd.read_pickle(demo_corpus / "test.pkl")["Sentence"]]
    heard = [normalize_text(s) for s in pd.read_pickle(demo_corpus / "test_stt.pkl")["Sentence"]]
    differs = np.array([a != b for a, b in zip(said, heard)])
    assert 0 < differs.sum() < len(differs)
    change = np.abs(read["test"] - read["test_stt"]).max(axis=1)
    assert (change[~differs] < 1e-5).all() and (change[differs] > 1e-6).mean() > 0.5


def test_test_outputs_metrics_predictions_and_confusion_png(trained_cross, demo_corpus):
    run_dir, _, _ = trained_cross
    metrics = evaluate(run_dir, "test_stt", demo_corpus, progress=False)
    out = run_dir / "eval" / "test_stt"
    saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert saved["accuracy"] == metrics["accuracy"] and len(saved["confusion_matrix"]) == 7
    predictions = pd.read_csv(out / "predictions.csv")
    probabilities = [f"p_{label}" for label in saved["labels"]]
    assert len(predictions) == saved["n"] and list(predictions.columns) == ["id", "prediction", *probabilities, "true_value"]
    assert predictions[probabilities].sum(axis=1).to_numpy() == pytest.approx(1, abs=1e-4)
    assert list(predictions[probabilities].to_numpy().argmax(1)) == [saved["labels"].index(p) for p in predictions["prediction"]]
    assert (predictions["prediction"] == predictions["true_value"]).mean() == pytest.approx(saved["accuracy"])
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_seed_gives_the_same_metrics(demo_corpus, tmp_path):
    cfg = small_config(demo_corpus, "audio", num_epochs=2)
    given = cfg.to_dict()
    first = train(cfg, tmp_path / "a", progress=False)
    assert cfg.to_dict() == given, "train() must not change the configuration it was given"
    second = train(small_config(demo_corpus, "audio", num_epochs=2), tmp_path / "b", progress=False)
    assert (first["dev_loss"], first["dev_macro_f1"]) == (second["dev_loss"], second["dev_macro_f1"])
    assert pd.read_csv(tmp_path / "a" / "epochs.csv")["train_loss"].tolist() == pd.read_csv(
        tmp_path / "b" / "epochs.csv"
    )["train_loss"].tolist()


def test_checkpoint_round_trip_gives_identical_predictions(demo_corpus, tmp_path):
    cfg = small_config(demo_corpus)
    encoder = text_encoder_for(cfg, torch.device("cpu"))
    dims = Dims.of(cfg, encoder.hidden_size)
    data = load_encoded(cfg, "dev", encoder, progress=False)
    model = build_model(cfg.model, dims).eval()
    model.audio_norm.set(*data.audio.mean_std())  # buffers must travel with the weights too
    save_config(tmp_path, cfg, dims)
    save_weights(tmp_path, model, cfg, dims)
    (tmp_path / FINISHED_FILE).write_text("{}")

    _, reloaded = load_run(tmp_path)
    batch = collate([data[i] for i in range(8)])
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.inference_mode():
        assert torch.equal(model(**inputs), reloaded(**inputs))
    assert not any(p.suffix == ".pt" or p.suffix == ".bin" for p in tmp_path.iterdir())


def test_length_buckets_batch_every_clip_once_with_less_padding(demo_corpus):
    data = load_encoded(small_config(demo_corpus, "audio"), "train", None, progress=False)
    bucketed = make_loader(data, 24, shuffle=True, seed=0, length_buckets=True)
    first_epoch, second_epoch = list(bucketed.batch_sampler), list(bucketed.batch_sampler)
    assert len(first_epoch) == len(bucketed) == math.ceil(len(data) / 24)
    assert sorted(i for batch in first_epoch for i in batch) == list(range(len(data)))
    assert first_epoch != second_epoch, "batches must change from epoch to epoch"
    assert list(make_loader(data, 24, shuffle=True, seed=0, length_buckets=True).batch_sampler) == first_epoch

    def padded_frames(loader) -> int:
        return sum(int((~batch["audio_mask"]).sum()) for batch in loader)

    at_random = padded_frames(make_loader(data, 24, shuffle=True, seed=0))
    assert padded_frames(bucketed) < 0.5 * at_random


@pytest.mark.parametrize("model", ["early", "late", "tfn", "lmf", "linear"])
def test_fusion_models_train_and_test_from_their_run_folder(demo_corpus, tmp_path, model):
    cfg = small_config(demo_corpus, model, num_epochs=1)
    cfg.model.layers = 1
    summary = train(cfg, tmp_path / model, progress=False)
    assert json.loads((tmp_path / model / "config.json").read_text(encoding="utf-8"))["model"]["modality"] == model
    metrics = evaluate(tmp_path / model, "test", demo_corpus, progress=False)
    assert metrics["n"] == 70 and 0 <= metrics["accuracy"] <= 1 and summary["best_epoch"] == 1


def test_transcript_noise_corrupts_the_asked_share_of_training_sentences_under_the_seed(demo_corpus):
    cfg = small_config(demo_corpus, "linear", seed=3)
    clean = load_any_split(demo_corpus, "train", cfg.labels, cfg.audio.sample_rate, with_audio=False).sentences
    encoder = CharNgramEncoder.fit(clean)
    noisy = load_encoded(cfg, "train", encoder, progress=False, transcript_noise=0.5)
    again = load_encoded(cfg, "train", encoder, progress=False, transcript_noise=0.5)
    np.testing.assert_array_equal(noisy.text.values, again.text.values)
    plain = load_encoded(cfg, "train", encoder, progress=False)
    changed = np.mean([(plain.text[plain.text_index[i]] != noisy.text[noisy.text_index[i]]).any().item()
                       for i in range(len(plain))])  # fmt: skip
    # Half the clips drawn, of which the recogniser gets 15% verbatim (and some differ only in punctuation).
    assert 0.25 < changed < 0.5, changed
    with pytest.raises(ValueError, match="transcript_noise must be a share"):
        load_encoded(cfg, "train", encoder, progress=False, transcript_noise=1.5)


@pytest.mark.parametrize("model", ["early", "mult"])
def test_fusion_flags_train_end_to_end(demo_corpus, tmp_path, model):
    """Prosody beside the MFCCs, n-grams as the text, modality dropout, transcript noise and class
    weights together, from the command line's config to a tested run."""
    cfg = small_config(demo_corpus, "cross" if model == "mult" else model, num_epochs=1, class_weights=True,
                       transcript_noise=0.3)  # fmt: skip
    cfg = replace(cfg, audio=replace(cfg.audio, features="mfcc+prosody"), text=replace(cfg.text, features="ngrams"),
                  model=replace(cfg.model, layers=1, modality_dropout=0.2))  # fmt: skip
    train(cfg, tmp_path / model, progress=False)
    saved = json.loads((tmp_path / model / "config.json").read_text(encoding="utf-8"))
    assert saved["dims"]["audio"] == 46 and saved["dims"]["text_vector"] and (tmp_path / model / "char_ngrams.json").is_file()
    metrics = evaluate(tmp_path / model, "test", demo_corpus, progress=False)
    assert metrics["n"] == 70 and metrics["accuracy"] > CHANCE


def test_a_results_row_keeps_the_audio_and_text_features_apart_and_the_data_name(tmp_path):
    from audiotext.training.loop import _append_result

    cfg = RunConfig(audio=AudioConfig(features="mfcc+prosody"), text=TextConfig(features="encoder"))
    _append_result(tmp_path / "results.csv", cfg, {"run_dir": "runs/a"}, data_name="vat")
    row = pd.read_csv(tmp_path / "results.csv").iloc[0]
    # One column "features" held the text's, the audio's lost; --data_name was recorded nowhere.
    assert (row["audio_features"], row["text_features"], row["data_name"]) == ("mfcc+prosody", "encoder", "vat")
