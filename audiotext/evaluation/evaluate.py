"""Testing a trained run on a split: metrics.json, predictions.csv and a confusion-matrix PNG."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from audiotext.evaluation.metrics import classification_metrics
from audiotext.evaluation.plots import plot_confusion_matrix
from audiotext.io import atomic_path, write_json
from audiotext.training.checkpoint import load_run
from audiotext.training.loop import load_encoded, make_loader, predict, select_device, text_encoder_for


def evaluate(
    run_dir: str | Path,
    split: str = "test",
    data_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    batch_size: int = 64,
    no_cuda: bool = False,
    progress: bool = True,
) -> dict:
    """Tests the run on `split` (a name in the data folder, or a .pkl path); returns the metrics.

    Outputs go to `out_dir`, by default `run_dir/eval/<split name>/`.
    """
    device = select_device(no_cuda)
    cfg, model = load_run(run_dir, device)
    if data_path is not None:
        cfg.data_path = str(data_path)
    data = load_encoded(cfg, split, text_encoder_for(cfg, device), progress)
    logits, targets = predict(model, make_loader(data, batch_size, shuffle=False), device)
    predicted = logits.argmax(-1)

    split_name = Path(split).stem
    out_dir = Path(out_dir) if out_dir is not None else Path(run_dir) / "eval" / split_name
    return write_evaluation(
        out_dir, targets.tolist(), predicted.tolist(), cfg.labels, title=f"{cfg.name} · {split_name}",
        run_dir=str(run_dir), split=split_name, modality=cfg.model.modality,
    )  # fmt: skip


def write_evaluation(
    out_dir: str | Path,
    targets: list[int],
    predicted: list[int],
    labels: list[str],
    title: str,
    extra_columns: dict[str, list] | None = None,
    **facts,
) -> dict:
    """Scores predictions and writes metrics.json (with `facts`), predictions.csv (id,
    `extra_columns`, prediction, true_value) and confusion_matrix.png into `out_dir`."""
    out_dir = Path(out_dir)
    metrics = classification_metrics(targets, predicted, labels)
    metrics.update(facts, labels=list(labels))
    write_json(out_dir / "metrics.json", metrics)
    predictions = pd.DataFrame(
        {
            "id": range(len(targets)),
            **(extra_columns or {}),
            "prediction": [labels[i] for i in predicted],
            "true_value": [labels[i] for i in targets],
        }
    )
    with atomic_path(out_dir / "predictions.csv") as tmp:
        predictions.to_csv(tmp, index=False)
    plot_confusion_matrix(metrics["confusion_matrix"], labels, out_dir / "confusion_matrix.png", title=title)
    return metrics
