"""Run folders and text-classifier folders at the level of their files, with tiny models built in
the test (no corpus, no training): what a weights file must agree with before it is used, and what
the text classifier's pooling reads. The same refusals through the command line are in
test_bad_inputs.py; these are fast enough to run for every mutant of `models/checkpoint.py`."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertModel

from audiotext.config import REFERENCE_LABELS, ModelConfig, RunConfig
from audiotext.features.encoders import load_text_encoder, save_directory
from audiotext.features.text import OUT_OF_FOLD_STATES, default_encoder_path, load_out_of_fold_states
from audiotext.models.checkpoint import (
    CONFIG_FILE,
    EPOCH_LOG,
    FINISHED_FILE,
    HEAD_CONFIG,
    HEAD_WEIGHTS,
    RESUME_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    checked_state,
    is_finished,
    load_config,
    load_run,
    load_text_classifier,
    save_config,
    save_text_classifier,
    save_weights,
)
from audiotext.models.classifiers import Dims, build_model
from audiotext.models.text_classifier import SequenceClassifier
from audiotext.training.state import save_state

DIMS = Dims(audio=13, text=16, classes=len(REFERENCE_LABELS))


def tiny_config() -> RunConfig:
    return RunConfig(name="tiny", model=ModelConfig(modality="cross", d_model=8, layers=1, num_heads=2))


def write_run(run_dir: Path, cfg: RunConfig, finished: bool = True) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(cfg.model, DIMS).eval()
    save_config(run_dir, cfg, DIMS)
    save_weights(run_dir, model, cfg, DIMS)
    if finished:
        (run_dir / FINISHED_FILE).write_text("{}")
    return model


def inputs() -> dict[str, torch.Tensor]:
    """A batch of 2 clips: audio (2, 9, F) and text states (2, 5, E), no padding."""
    g = torch.Generator().manual_seed(0)
    audio, text = torch.randn(2, 9, DIMS.audio, generator=g), torch.randn(2, 5, DIMS.text, generator=g)
    return dict(audio=audio, audio_mask=torch.ones(2, 9, dtype=torch.bool),
                text=text, text_mask=torch.ones(2, 5, dtype=torch.bool))  # fmt: skip


def test_a_finished_run_loads_as_it_was_saved_in_eval_mode(tmp_path):
    model = write_run(tmp_path, tiny_config())
    cfg, loaded = load_run(tmp_path)
    assert cfg == tiny_config() and not loaded.training and is_finished(tmp_path)
    with torch.inference_mode():
        assert torch.equal(model(**inputs()), loaded(**inputs()))
    stored = json.loads((tmp_path / CONFIG_FILE).read_text(encoding="utf-8"))
    assert stored["dims"] == dataclasses.asdict(DIMS)


@pytest.mark.parametrize("umask, mode", [(0o027, 0o640), (0o002, 0o664)])
def test_weights_are_as_readable_as_the_other_files_of_the_run(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        write_run(tmp_path, tiny_config())
    finally:
        os.umask(previous)
    assert (tmp_path / WEIGHTS_FILE).stat().st_mode & 0o777 == (tmp_path / CONFIG_FILE).stat().st_mode & 0o777 == mode


def test_training_states_and_written_folders_are_as_readable_as_other_files(tmp_path):
    # safetensors writes owner-only: another user (a service, another node's account) could not load them.
    previous = os.umask(0o022)
    try:
        save_state(tmp_path / RESUME_FILE, {"model": {"w": torch.ones(2)}, "epoch": 1})
        save_directory(tmp_path / "encoder", lambda folder: save_file({"w": torch.ones(2)}, folder / "model.safetensors"))
    finally:
        os.umask(previous)
    assert (tmp_path / RESUME_FILE).stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "encoder" / "model.safetensors").stat().st_mode & 0o777 == 0o644


def test_an_unfinished_run_is_refused_unless_its_best_epoch_so_far_is_asked_for(tmp_path):
    model = write_run(tmp_path, tiny_config(), finished=False)
    assert not is_finished(tmp_path)
    hint = "resume it with train --resume, or test its best epoch so far with test --best_so_far"
    with pytest.raises(CheckpointError, match=f"did not finish \\(no {FINISHED_FILE}\\); {hint}"):
        load_run(tmp_path)
    with pytest.warns(UserWarning, match="best epoch so far"):
        _, loaded = load_run(tmp_path, best_so_far=True)
    with torch.inference_mode():
        assert torch.equal(model(**inputs()), loaded(**inputs()))


def test_a_finished_run_loads_without_a_warning(tmp_path):
    write_run(tmp_path, tiny_config())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_run(tmp_path, best_so_far=True)


def test_folders_without_a_config_dims_or_weights_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"not a run directory \\(no {CONFIG_FILE}\\)"):
        load_config(tmp_path)
    write_run(tmp_path, tiny_config())
    (tmp_path / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=f"no {WEIGHTS_FILE}"):
        load_run(tmp_path)
    stored = json.loads((tmp_path / CONFIG_FILE).read_text(encoding="utf-8"))
    del stored["dims"]
    (tmp_path / CONFIG_FILE).write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="no 'dims'"):
        load_config(tmp_path)
    write_run(tmp_path, tiny_config())
    stored = json.loads((tmp_path / CONFIG_FILE).read_text(encoding="utf-8"))
    stored["model"]["heads_of_the_future"] = 2
    (tmp_path / CONFIG_FILE).write_text(json.dumps(stored))
    with pytest.raises(ValueError, match=r"config.json: .*'heads_of_the_future'; was it written by another version"):
        load_config(tmp_path)


def test_a_relative_text_encoder_is_found_inside_the_folder_and_nowhere_else(tmp_path):
    cfg = tiny_config()
    cfg.text.encoder = "encoder"
    write_run(tmp_path, cfg)
    assert load_config(tmp_path)[0].text.encoder == "encoder"  # no such folder inside: left as written
    (tmp_path / "encoder").mkdir()
    assert load_config(tmp_path)[0].text.encoder == str(tmp_path / "encoder")


def spoilt(run_dir: Path, edit) -> Path:
    """The run's weights with `edit(state)` applied, in a file of their own, the metadata kept."""
    with safe_open(str(run_dir / WEIGHTS_FILE), framework="pt") as stored:
        metadata = stored.metadata()
    state = load_file(run_dir / WEIGHTS_FILE)
    edit(state)
    path = run_dir / "spoilt.safetensors"
    save_file(state, str(path), metadata=metadata)
    return path


def add_tensor(state):
    state["stray.weight"] = torch.zeros(2)


def widen_first(state):
    name = sorted(state)[0]
    state[name] = torch.zeros(*state[name].shape[:-1], state[name].shape[-1] + 1)


def poison_last(state):
    name = [n for n, t in sorted(state.items()) if t.is_floating_point()][-1]
    state[name] = state[name].clone()
    state[name].view(-1)[-1] = float("nan")


def drop_tensors(state):
    for name in ("head.out.weight", "head.out.bias"):
        del state[name]


@pytest.mark.parametrize(
    "edit, message",
    [(add_tensor, r"tensor 'stray.weight' \(1 in all\) is not part of the 'cross' model of config.json"),
     (drop_tensors, r"no tensor 'head.out.bias' \(2 missing\), which the 'cross' model of config.json needs"),
     (widen_first, r"tensor 'head.out.bias' has shape \(.+\), the model of config.json needs \(.+\)"),
     (poison_last, r"tensor '.+' holds non-finite values \(NaN or inf\)")],
)  # fmt: skip
def test_weights_that_do_not_fit_the_model_name_the_tensor(tmp_path, edit, message):
    cfg = tiny_config()
    write_run(tmp_path, cfg)
    weights = spoilt(tmp_path, edit)
    with pytest.raises(CheckpointError, match=f"^{weights}: {message}"):
        checked_state(weights, build_model(cfg.model, DIMS), cfg, DIMS)


@pytest.mark.parametrize(
    "change, message",
    [(lambda cfg: setattr(cfg, "labels", [*cfg.labels[1:], cfg.labels[0]]), "trained with labels = "),
     (lambda cfg: setattr(cfg.audio, "n_mfcc", 20), "trained with audio = "),
     (lambda cfg: setattr(cfg.text, "features", "ngrams"), "trained with text_features = 'encoder'"),
     (lambda cfg: setattr(cfg.model, "modality", "early"), "trained with modality = 'cross'")],
)  # fmt: skip
def test_weights_trained_with_other_labels_or_features_are_refused(tmp_path, change, message):
    cfg = tiny_config()
    write_run(tmp_path, cfg)
    change(cfg)
    with pytest.raises(CheckpointError, match=f"^{tmp_path / WEIGHTS_FILE}: {message}.+but {CONFIG_FILE} says"):
        checked_state(tmp_path / WEIGHTS_FILE, build_model(tiny_config().model, DIMS), cfg, DIMS)


def test_weights_without_recorded_settings_still_load_when_every_tensor_fits(tmp_path):
    cfg = tiny_config()
    model = write_run(tmp_path, cfg)
    save_file(load_file(tmp_path / WEIGHTS_FILE), str(tmp_path / "bare.safetensors"))
    state = checked_state(tmp_path / "bare.safetensors", model, cfg, DIMS)
    assert state.keys() == model.state_dict().keys()


def test_a_file_that_is_not_safetensors_is_named(tmp_path):
    cfg = tiny_config()
    (tmp_path / WEIGHTS_FILE).write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match=f"^{tmp_path / WEIGHTS_FILE}: not a readable safetensors file"):
        checked_state(tmp_path / WEIGHTS_FILE, build_model(cfg.model, DIMS), cfg, DIMS)


@pytest.fixture(scope="module")
def tokenizer():
    return load_text_encoder(default_encoder_path())[0]


def tiny_bert(pooler: bool) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)  # fmt: skip
    return BertModel(config, add_pooling_layer=pooler).eval()


def encoded(tokenizer, sentences) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask, (B, L) each."""
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


@pytest.mark.parametrize("pooling", ["pooler", "cls", "mean"])
def test_each_pooling_reads_what_it_names(tokenizer, pooling):
    classifier = SequenceClassifier(tiny_bert(pooler=True), 7, pooling, dropout=0.0).eval()
    batch = encoded(tokenizer, ["무서워", "시험 결과가 방금 나왔어요"])
    with torch.inference_mode():
        out = classifier.encoder(**batch)
        states, mask = out.last_hidden_state, batch["attention_mask"]
        pooled = {"pooler": out.pooler_output, "cls": states[:, 0],
                  "mean": (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)}[pooling]  # fmt: skip
        torch.testing.assert_close(classifier(**batch), classifier.classifier(pooled), rtol=0, atol=1e-6)
    assert classifier.encoder.pooler.dense.weight.requires_grad == (pooling == "pooler")


def test_pooling_is_checked_against_the_encoder(tokenizer):
    with pytest.raises(ValueError, match="pooling must be one of"):
        SequenceClassifier(tiny_bert(pooler=True), 7, "max", dropout=0.0)
    with pytest.raises(ValueError, match="needs an encoder with a pooler layer"):
        SequenceClassifier(tiny_bert(pooler=False), 7, "pooler", dropout=0.0)
    assert SequenceClassifier(tiny_bert(pooler=False), 7, "mean", dropout=0.5).dropout.p == 0.5


def test_a_text_classifier_folder_round_trips_with_its_out_of_fold_states(tokenizer, tmp_path):
    classifier = SequenceClassifier(tiny_bert(pooler=False), 7, "mean", dropout=0.0).eval()
    info = {"labels": list(REFERENCE_LABELS), "pooling": "mean", "dropout": 0.0, "max_len": 32}
    states = {"무서워": torch.randn(3, 16)}
    out = save_text_classifier(tmp_path / "clf", tokenizer, classifier, info, [{"epoch": 1, "loss": 0.5}], states)
    assert json.loads((out / HEAD_CONFIG).read_text(encoding="utf-8")) == info
    assert set(load_file(out / HEAD_WEIGHTS)) == {"weight", "bias"}
    assert (out / EPOCH_LOG).read_text().splitlines() == ["epoch,loss", "1,0.5"]
    torch.testing.assert_close(load_out_of_fold_states(out)["무서워"], states["무서워"])

    with pytest.warns(UserWarning, match="pooler.dense.bias, pooler.dense.weight"):  # unused, never saved
        _, loaded, loaded_info = load_text_classifier(out)
    batch = encoded(tokenizer, ["무서워", "시험 결과가 방금 나왔어요"])
    with torch.inference_mode():
        torch.testing.assert_close(loaded(**batch), classifier(**batch), rtol=0, atol=0)
    assert loaded_info == info and not loaded.training

    save_text_classifier(tmp_path / "plain", tokenizer, classifier, info, [{"epoch": 1}])
    assert not (tmp_path / "plain" / OUT_OF_FOLD_STATES).exists()


def test_a_folder_without_the_head_files_is_not_a_text_classifier(tokenizer, tmp_path):
    classifier = SequenceClassifier(tiny_bert(pooler=False), 7, "mean", dropout=0.0)
    info = {"labels": [], "pooling": "mean", "dropout": 0.0}
    out = save_text_classifier(tmp_path / "clf", tokenizer, classifier, info, [{"epoch": 1}])
    (out / HEAD_WEIGHTS).unlink()
    with pytest.raises(FileNotFoundError, match="lacks classifier.json or classifier_head.safetensors"):
        load_text_classifier(out)
