"""Testing a trained model on a split: metrics.json, predictions.csv and a confusion-matrix PNG,
for a run folder (`evaluate`) and for a fine-tuned text classifier (`evaluate_text_classifier`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pandas as pd
import torch

from audiotext.config import AudioConfig
from audiotext.data.loading import load_encoded, make_loader, text_encoder_for
from audiotext.data.manifest import is_manifest, load_any_split
from audiotext.errors import DataError
from audiotext.evaluation.metrics import classification_metrics
from audiotext.evaluation.plots import plot_confusion_matrix
from audiotext.features.cache import FeatureCache
from audiotext.features.encoders import save_directory
from audiotext.inference.predict import predict, predict_sentences, probability_columns
from audiotext.io import write_json
from audiotext.models.checkpoint import CONFIG_FILE, METRICS_FILE, load_run, load_text_classifier, weights_digest
from audiotext.runtime import select_device



def evaluate(run_dir: str | Path, split: str = "test", *args, **kwargs) -> dict:
    """Tests the run on `split` (a name in the data folder, or a .pkl path), writes its outputs and
    returns the metrics; see `evaluation` for the arguments."""
    return evaluation(run_dir, split, *args, **kwargs)()


def evaluation(
    run_dir: str | Path,
    split: str = "test",
    data_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    batch_size: int = 64,
    no_cuda: bool = False,
    cache: FeatureCache | None = None,
    progress: bool = True,
    best_so_far: bool = False,
) -> Callable[[], dict]:
    """Tests the run on `split` and returns what writes the outputs and returns the metrics: a
    command testing several splits tests them all (files, labels, clips) before it writes any.

    `data_path` defaults to the run's own when that is a manifest; a folder of pickles must be
    named by the caller, since unpickling runs code and a run folder may come from anyone.
    Features come from `cache` where it has them (None: computed in memory). Outputs go to
    `out_dir`, by default `run_dir/eval/<split name>/`. `best_so_far`: see `load_run`.
    """
    device = select_device(no_cuda)
    cfg, model = load_run(run_dir, device, best_so_far=best_so_far)
    if data_path is not None:
        cfg.data_path = str(data_path)
    elif not (is_manifest(cfg.data_path) or is_manifest(split) or str(split).endswith(".pkl")):
        raise DataError(
            f"{Path(run_dir) / CONFIG_FILE} names the data {cfg.data_path}, a folder of pickles; a pickle can run "
            f"code when read, so a run folder's own data path is not unpickled: name it yourself "
            f"(--data_path {cfg.data_path}) if you trust it"
        )
    data = load_encoded(cfg, split, text_encoder_for(cfg, device, run_dir), cache, progress)
    logits, targets = predict(model, make_loader(data, batch_size, shuffle=False), device)
    predicted = logits.argmax(-1)

    split_name = Path(split).stem
    absent = [label for i, label in enumerate(cfg.labels) if not (targets == i).any()]
    if absent:  # macro-F1 is the mean over the model's classes, a class without a clip at F1 0
        warnings.warn(f"{split_name}: no clip of {', '.join(absent)}: each counts as F1 0 in macro-F1, the mean "
                      f"over all {len(cfg.labels)} classes")  # fmt: skip
    out_dir = Path(out_dir) if out_dir is not None else Path(run_dir) / "eval" / split_name
    return partial(
        write_evaluation,
        out_dir, targets.tolist(), predicted.tolist(), cfg.labels, title=f"{cfg.name} · {split_name}",
        probabilities=logits.softmax(-1), run_dir=str(Path(run_dir).resolve()), split=split_name,
        modality=cfg.model.modality, weights=weights_digest(Path(run_dir)), best_so_far=best_so_far,
        # What was tested, which need not be what the run trained on: a split file of its own, or the data's split.
        data=str(Path(split if is_manifest(split) or str(split).endswith(".pkl") else cfg.data_path).resolve()),
    )  # fmt: skip


def write_evaluation(
    out_dir: str | Path,
    targets: list[int],
    predicted: list[int],
    labels: list[str],
    title: str,
    extra_columns: dict[str, list] | None = None,
    probabilities: torch.Tensor | None = None,
    **facts,
) -> dict:
    """Scores predictions and writes metrics.json (with `facts`), predictions.csv (id,
    `extra_columns`, prediction, p_<label> for each class when `probabilities` (N, C) are given,
    true_value) and confusion_matrix.png into `out_dir`, all three or none: the folder is written
    beside it and put in its place (an evaluation folder there is replaced, any other refused)."""
    metrics = classification_metrics(targets, predicted, labels)
    metrics.update(facts, labels=list(labels))
    predictions = pd.DataFrame(
        {
            "id": range(len(targets)),
            **(extra_columns or {}),
            "prediction": [labels[i] for i in predicted],
            **(probability_columns(probabilities, labels) if probabilities is not None else {}),
            "true_value": [labels[i] for i in targets],
        }
    )

    def write(folder: Path) -> None:
        write_json(folder / METRICS_FILE, metrics)
        predictions.to_csv(folder / "predictions.csv", index=False)
        plot_confusion_matrix(metrics["confusion_matrix"], labels, folder / "confusion_matrix.png", title=title)

    save_directory(out_dir, write, marker=METRICS_FILE, setting="the evaluation folder")
    return metrics


def evaluate_text_classifier(model_dir: str | Path, data_path: str | Path, split: str, *args, **kwargs) -> dict:
    """Scores a fine-tuned classifier on every clip of a split (see `load_any_split`; test_stt's
    sentences are ASR transcripts); writes metrics.json, predictions.csv and confusion_matrix.png."""
    return text_classifier_evaluation(model_dir, data_path, split, *args, **kwargs)()


def text_classifier_evaluation(
    model_dir: str | Path,
    data_path: str | Path,
    split: str,
    out_dir: str | Path,
    batch_size: int = 64,
    no_cuda: bool = False,
) -> Callable[[], dict]:
    """`evaluate_text_classifier` but for the writing, which the function returned does (see `evaluation`)."""
    device = select_device(no_cuda)
    tokenizer, model, info = load_text_classifier(model_dir, device)
    labels = info["labels"]
    split = load_any_split(data_path, split, labels, AudioConfig().sample_rate, with_audio=False)
    logits = predict_sentences(tokenizer, model, split.sentences, info["max_len"], batch_size, device)
    predicted = logits.argmax(-1)

    return partial(
        write_evaluation, out_dir, split.labels.tolist(), predicted.tolist(), labels, title=f"{Path(model_dir).name} · {split.name}",
        extra_columns={"sentence": split.sentences}, probabilities=logits.softmax(-1),
        model_dir=str(Path(model_dir).resolve()), split=split.name, modality="text (fine-tuned)", data=str(split.path.resolve()),
    )  # fmt: skip
