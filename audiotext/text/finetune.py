"""The text-only baseline: a BERT-family encoder fine-tuned as a sentence classifier, and its test
on a split. (The frozen-encoder + linear baseline it should beat is `audiotext train --do_text`.)

The classifier is the reference's: pooled [CLS] → dropout → linear. The pooler (tanh over a dense
layer on the [CLS] state) is used only when the checkpoint ships its weights. A checkpoint without
one (a masked-LM model, one trained from scratch here) never learnt to sum a sentence up in [CLS],
so the masked mean of its token states is used instead, as sentence encoders do (a small BERT
with a 2000-token vocabulary trained from scratch on the demo corpus, tested on unseen sentences:
43% accuracy with the mean, 20% and 34% with the [CLS] state at two learning rates).

Training reads the DISTINCT (sentence, label) pairs of train.pkl: the reference corpus has ~10,000
clips but ~350 scripts, and one epoch over every clip would repeat each sentence ~30 times.
Dev and test are scored per clip, so counts match the audio and cross-modal models.

A saved classifier is a Hugging Face directory (the encoder's config.json, model.safetensors and
tokenizer) plus `classifier_head.safetensors` and `classifier.json` (labels, pooling, ...), so
`TextEncoder(directory)` takes it as the frozen encoder of the cross-modal model.

Shape legend: B sentences in a batch, L tokens, E encoder width, C classes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from sklearn.model_selection import StratifiedKFold
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from audiotext.config import REFERENCE_LABELS, AudioConfig
from audiotext.data.corpus import Split
from audiotext.data.manifest import load_any_split
from audiotext.evaluation.evaluate import write_evaluation
from audiotext.features.text import default_encoder_path, last_hidden_states, normalize_text, save_out_of_fold_states
from audiotext.io import write_csv_rows
from audiotext.text.loading import load_text_encoder, load_text_encoder_with_report, save_directory
from audiotext.training.loop import score_logits, seed_everything, select_device

HEAD_WEIGHTS = "classifier_head.safetensors"
HEAD_CONFIG = "classifier.json"
EPOCH_LOG = "epochs.csv"
POOLINGS = ("pooler", "cls", "mean")


class SequenceClassifier(nn.Module):
    """encoder → pooled [CLS] ("pooler"), [CLS] state ("cls") or mean of the token states ("mean")
    → dropout → linear."""

    def __init__(self, encoder: PreTrainedModel, n_classes: int, pooling: str, dropout: float) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if pooling == "pooler" and getattr(encoder, "pooler", None) is None:
            raise ValueError("pooling 'pooler' needs an encoder with a pooler layer")
        self.encoder, self.pooling = encoder, pooling
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.config.hidden_size, n_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask: (B, L) → logits (B, C)."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        if self.pooling == "pooler":
            pooled = out.pooler_output  # (B, E)
        elif self.pooling == "cls":
            pooled = out.last_hidden_state[:, 0]
        else:
            weights = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)  # (B, L, 1)
            pooled = (out.last_hidden_state * weights).sum(1) / weights.sum(1)
        return self.classifier(self.dropout(pooled))


def distinct_pairs(split: Split) -> tuple[list[str], list[int]]:
    """Normalised sentences and labels, each (sentence, label) pair once, in first-seen order."""
    pairs = list(dict.fromkeys((normalize_text(s), int(y)) for s, y in zip(split.sentences, split.labels)))
    return [s for s, _ in pairs], [y for _, y in pairs]


def _batches(tokenizer: PreTrainedTokenizerBase, ids: list[list[int]], order: Sequence[int], batch_size: int):
    for start in range(0, len(order), batch_size):
        rows = list(order[start : start + batch_size])
        yield rows, tokenizer.pad({"input_ids": [ids[i] for i in rows]}, return_tensors="pt")  # (B, L)


@torch.inference_mode()
def predict_sentences(
    tokenizer: PreTrainedTokenizerBase,
    model: SequenceClassifier,
    sentences: Sequence[str],
    max_len: int,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Logits (N, C) for N sentences; each distinct normalised sentence runs through the model once."""
    texts = [normalize_text(s) for s in sentences]
    distinct = list(dict.fromkeys(texts))
    ids = tokenizer(distinct, truncation=True, max_length=max_len)["input_ids"]
    model.eval()
    logits = torch.empty(len(distinct), model.classifier.out_features)
    for rows, batch in _batches(tokenizer, ids, range(len(distinct)), batch_size):
        logits[rows] = model(batch["input_ids"].to(device), batch["attention_mask"].to(device)).float().cpu()
    index = {t: i for i, t in enumerate(distinct)}
    return logits[[index[t] for t in texts]]


@dataclass(frozen=True)
class FinetuneSettings:
    """The hyper-parameters of one fine-tuning run (defaults: `finetune`'s arguments)."""

    epochs: int
    lr: float
    batch_size: int
    warmup_percent: float
    max_len: int
    seed: int
    weight_decay: float
    clip: float


def finetune(
    data_path: str | Path,
    encoder: str | Path | None,
    out_dir: str | Path,
    labels: Sequence[str] = REFERENCE_LABELS,
    epochs: int = 25,
    lr: float = 2e-4,
    batch_size: int = 16,
    warmup_percent: float = 0.1,
    max_len: int = 64,
    seed: int = 1111,
    pooling: str = "auto",
    weight_decay: float = 0.01,
    clip: float = 1.0,
    cross_fit_folds: int = 0,
    no_cuda: bool = False,
    progress: bool = True,
) -> dict:
    """Fine-tunes `encoder` (a Hugging Face or legacy directory; None = packaged MiniLM) on the
    distinct sentences of data_path/train.pkl; keeps the epoch with the best dev macro-F1 (ties:
    lower dev loss) and saves it to `out_dir`. Returns the best dev metrics and run facts.

    `pooling="auto"` uses the pooler when the checkpoint has its weights, else the mean of the
    token states.

    `cross_fit_folds=K` (K >= 2) also fine-tunes K more encoders, each on all training sentences
    but one fold, and stores every training sentence's last hidden layer from the encoder that did
    not see it (out-of-fold states, see `TextEncoder`). A model fed by this encoder then trains on
    text features as good as those of unseen sentences, not on features that already know the answer.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be at least 1, got {epochs}, {batch_size}")
    if pooling not in ("auto", *POOLINGS):
        raise ValueError(f"pooling must be 'auto' or one of {POOLINGS}, got {pooling!r}")
    if not 0 <= warmup_percent <= 1:
        raise ValueError(f"warmup_percent must be in [0, 1], got {warmup_percent}")
    if cross_fit_folds == 1 or cross_fit_folds < 0:
        raise ValueError(f"cross_fit_folds must be 0 (off) or at least 2, got {cross_fit_folds}")
    started = time.perf_counter()
    labels = list(labels)
    settings = FinetuneSettings(epochs, lr, batch_size, warmup_percent, max_len, seed, weight_decay, clip)
    device = select_device(no_cuda)
    encoder_path = default_encoder_path() if encoder is None else Path(encoder)
    train_split, dev_split = (
        load_any_split(data_path, name, labels, AudioConfig().sample_rate, with_audio=False) for name in ("train", "dev")
    )
    sentences, targets = distinct_pairs(train_split)
    if cross_fit_folds > min(np.bincount(targets)):
        raise ValueError(
            f"cross_fit_folds {cross_fit_folds}: every fold needs a sentence of each label, but {data_path} "
            f"has only {min(np.bincount(targets))} training sentences of its rarest label"
        )

    fit = functools.partial(_fit, encoder_path, labels, dev_split=dev_split, settings=settings, device=device,
                            progress=progress)  # fmt: skip
    tokenizer, model, best, rows = fit(pooling, sentences, targets, desc="finetune")
    out_of_fold = (
        _out_of_fold_states(fit, model.pooling, sentences, targets, cross_fit_folds, settings, device)
        if cross_fit_folds
        else {}
    )
    info = {
        "labels": labels,
        "pooling": model.pooling,
        "dropout": model.dropout.p,
        "max_len": max_len,
        "base_encoder": str(encoder_path),
        "train_sentences": len(sentences),
        "train_clips": len(train_split),
        "cross_fit_folds": cross_fit_folds,
        "best_epoch": best["epoch"],
        "dev_accuracy": best["accuracy"],
        "dev_macro_f1": best["macro_f1"],
        "dev_loss": best["loss"],
        "hyperparameters": dataclasses.asdict(settings),
    }
    save_text_classifier(out_dir, tokenizer, model, info, rows, out_of_fold)
    return {**info, "model_dir": str(out_dir), "seconds": time.perf_counter() - started}


def _fit(
    encoder_path: Path,
    labels: list[str],
    pooling: str,
    sentences: list[str],
    targets: list[int],
    *,
    dev_split: Split,
    settings: FinetuneSettings,
    device: torch.device,
    progress: bool,
    desc: str,
) -> tuple[PreTrainedTokenizerBase, SequenceClassifier, dict, list[dict]]:
    """A classifier fine-tuned from `encoder_path` on (sentences, targets), at its best dev epoch;
    with that epoch's dev metrics and one log row per epoch."""
    seed_everything(settings.seed)
    tokenizer, model_encoder, report = load_text_encoder_with_report(encoder_path)
    if pooling == "auto":
        has_pooler = getattr(model_encoder, "pooler", None) is not None
        pooling = "pooler" if has_pooler and not any(k.startswith("pooler.") for k in report.missing_keys) else "mean"
    dropout = getattr(model_encoder.config, "classifier_dropout", None) or model_encoder.config.hidden_dropout_prob
    model = SequenceClassifier(model_encoder, len(labels), pooling, dropout).to(device)
    ids = tokenizer(sentences, truncation=True, max_length=settings.max_len)["input_ids"]
    y = torch.tensor(targets)

    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(sentences) / settings.batch_size)
    total = settings.epochs * steps_per_epoch
    schedule = get_linear_schedule_with_warmup(optimizer, math.ceil(settings.warmup_percent * total), total)
    generator = torch.Generator().manual_seed(settings.seed)

    best: dict = {}
    best_state: dict[str, torch.Tensor] = {}
    rows = []
    for epoch in range(1, settings.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        losses = []
        order = torch.randperm(len(sentences), generator=generator).tolist()
        bar = tqdm(_batches(tokenizer, ids, order, settings.batch_size), total=steps_per_epoch, leave=False,
                   desc=f"{desc} epoch {epoch}/{settings.epochs}", disable=not progress)  # fmt: skip
        for batch_rows, batch in bar:
            logits = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))  # (B, C)
            loss = F.cross_entropy(logits, y[batch_rows].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{loss.item():.4f}")
        dev_logits = predict_sentences(tokenizer, model, dev_split.sentences, settings.max_len, device=device)  # (N_dev, C)
        dev = score_logits(dev_logits, torch.as_tensor(dev_split.labels), labels)
        improved = not best or (dev["macro_f1"], -dev["loss"]) > (best["macro_f1"], -best["loss"])
        if improved:
            best = {**dev, "epoch": epoch}
            # A CPU copy in memory: the directory is written once, at the end, not every epoch.
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        rows.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "dev_loss": dev["loss"],
                     "dev_accuracy": dev["accuracy"], "dev_macro_f1": dev["macro_f1"],
                     "lr": schedule.get_last_lr()[0], "seconds": time.perf_counter() - epoch_started})  # fmt: skip
        if progress:
            r = rows[-1]
            tqdm.write(f"{desc} epoch {epoch:3d}  train loss {r['train_loss']:.4f}  dev loss {dev['loss']:.4f}  "
                       f"acc {dev['accuracy']:.4f}  macro-F1 {dev['macro_f1']:.4f}  {r['seconds']:.1f}s"
                       + ("  *best" if improved else ""))  # fmt: skip
    model.load_state_dict(best_state)
    return tokenizer, model, best, rows


def _out_of_fold_states(
    fit: Callable[..., tuple[PreTrainedTokenizerBase, SequenceClassifier, dict, list[dict]]],
    pooling: str,
    sentences: list[str],
    targets: list[int],
    folds: int,
    settings: FinetuneSettings,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Each training sentence's last hidden layer (L_i, E) from a classifier that `fit` trained on
    the other folds: stratified by label, seeded, so every fold holds every label."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=settings.seed)
    states: dict[str, torch.Tensor] = {}
    for fold, (kept, held_out) in enumerate(splitter.split(sentences, targets), 1):
        tokenizer, model, _, _ = fit(
            pooling, [sentences[i] for i in kept], [targets[i] for i in kept], desc=f"cross-fit {fold}/{folds}"
        )
        held_out_sentences = [sentences[i] for i in held_out]
        states.update(last_hidden_states(tokenizer, model.encoder.eval(), held_out_sentences, settings.max_len, device))
    return states


def save_text_classifier(
    out_dir: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    model: SequenceClassifier,
    info: dict,
    epoch_rows: list[dict],
    out_of_fold: dict[str, torch.Tensor] | None = None,
) -> Path:
    def write(tmp: Path) -> None:
        model.encoder.save_pretrained(tmp)  # config.json + model.safetensors
        tokenizer.save_pretrained(tmp)
        head = {k: v.detach().cpu().contiguous() for k, v in model.classifier.state_dict().items()}
        save_file(head, tmp / HEAD_WEIGHTS)
        if out_of_fold:
            save_out_of_fold_states(tmp, out_of_fold)
        (tmp / HEAD_CONFIG).write_text(json.dumps(info, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        write_csv_rows(tmp / EPOCH_LOG, epoch_rows)

    return save_directory(out_dir, write)


def load_text_classifier(
    model_dir: str | Path, device: torch.device | str = "cpu"
) -> tuple[PreTrainedTokenizerBase, SequenceClassifier, dict]:
    """(tokenizer, classifier in eval mode, classifier.json) from a `finetune` output directory."""
    model_dir = Path(model_dir)
    if not (model_dir / HEAD_CONFIG).is_file() or not (model_dir / HEAD_WEIGHTS).is_file():
        raise FileNotFoundError(
            f"{model_dir} is not a fine-tuned text classifier: it lacks {HEAD_CONFIG} or {HEAD_WEIGHTS}"
        )
    info = json.loads((model_dir / HEAD_CONFIG).read_text(encoding="utf-8"))
    tokenizer, encoder = load_text_encoder(model_dir)
    model = SequenceClassifier(encoder, len(info["labels"]), info["pooling"], info["dropout"])
    model.classifier.load_state_dict(load_file(model_dir / HEAD_WEIGHTS))
    return tokenizer, model.to(device).eval(), info


def evaluate_text_classifier(
    model_dir: str | Path,
    data_path: str | Path,
    split: str,
    out_dir: str | Path,
    batch_size: int = 64,
    no_cuda: bool = False,
) -> dict:
    """Scores a fine-tuned classifier on every clip of a split (see `load_any_split`; test_stt's
    sentences are ASR transcripts); writes metrics.json, predictions.csv and confusion_matrix.png."""
    device = select_device(no_cuda)
    tokenizer, model, info = load_text_classifier(model_dir, device)
    labels = info["labels"]
    split = load_any_split(data_path, split, labels, AudioConfig().sample_rate, with_audio=False)
    predicted = predict_sentences(tokenizer, model, split.sentences, info["max_len"], batch_size, device).argmax(-1)

    return write_evaluation(
        out_dir, split.labels.tolist(), predicted.tolist(), labels, title=f"{Path(model_dir).name} · {split.name}",
        extra_columns={"sentence": split.sentences},
        model_dir=str(model_dir), split=split.name, modality="text (fine-tuned)",
    )  # fmt: skip
