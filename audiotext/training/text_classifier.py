"""Fine-tuning the text-only baseline on the engine: a BERT-family encoder trained as a sentence
classifier (`audiotext.models.text_classifier`), and cross-fitting its states for the cross-modal
model. (The frozen-encoder + linear baseline it should beat is `audiotext train --do_text`.)

Training reads the DISTINCT (sentence, label) pairs of train.pkl: the reference corpus has ~10,000
clips but ~350 scripts, and one epoch over every clip would repeat each sentence ~30 times.
Dev and test are scored per clip, so counts match the audio and cross-modal models.

A saved classifier is a Hugging Face directory (the encoder's config.json, model.safetensors and
tokenizer) plus `classifier_head.safetensors` and `classifier.json` (labels, pooling, ...), so
`TextEncoder(directory)` takes it as the frozen encoder of the cross-modal model.

While it trains, the job keeps its state beside the output folder (`.NAME.training`): each fit's
training state every epoch and each finished cross-fitting fold's states, so that a stopped job
resumes (`resume`) to the classifier it would have given.

Shape legend: B sentences in a batch, L tokens, E encoder width, C classes.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import StratifiedKFold
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from audiotext.config import REFERENCE_LABELS, AudioConfig
from audiotext.data.corpus import Split
from audiotext.data.manifest import load_any_split
from audiotext.data.transcripts import hangul_vocabulary, noisy_variants
from audiotext.evaluation.metrics import score_logits
from audiotext.features.encoders import check_max_len, load_text_encoder_with_report, save_directory
from audiotext.features.text import (
    check_sentence_length,
    default_encoder_path,
    last_hidden_states,
    load_out_of_fold_states,
    normalize_text,
    pad_token_ids,
    save_out_of_fold_states,
)
from audiotext.inference.predict import predict_sentences
from audiotext.io import folder_digest, json_digest
from audiotext.models.checkpoint import save_text_classifier
from audiotext.models.text_classifier import POOLINGS, SequenceClassifier
from audiotext.runtime import join_processes, on_main, processes
from audiotext.training.engine import Engine, EngineSettings, check_job_settings
from audiotext.training.run_folder import claim_state_folder


def distinct_pairs(split: Split) -> tuple[list[str], list[int]]:
    """Normalised sentences and labels, each (sentence, label) pair once, in first-seen order."""
    pairs = list(dict.fromkeys((normalize_text(s), int(y)) for s, y in zip(split.sentences, split.labels)))
    return [s for s, _ in pairs], [y for _, y in pairs]


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
    resume: bool = False,
) -> dict:
    """Fine-tunes `encoder` (a Hugging Face or legacy directory; None = packaged MiniLM) on the
    distinct sentences of data_path/train.pkl; keeps the epoch with the best dev macro-F1 (ties:
    lower dev loss) and saves it to `out_dir`. Returns the best dev metrics and run facts.

    `pooling="auto"` uses the pooler when the checkpoint has its weights, else the mean of the
    token states.

    `cross_fit_folds=K` (K >= 2) also fine-tunes K more encoders, each on all training sentences
    but one fold, and stores every training sentence's last hidden layer from the encoder that did
    not see it (out-of-fold states, see `TextEncoder`), and those of its `noisy_variants` (what
    `--transcript_noise` trains on). A model fed by this encoder then trains on text features as
    good as those of unseen sentences, not on features that already know the answer.

    `resume` continues the job a stopped call with the same arguments left beside `out_dir`.
    """
    check_job_settings(epochs, batch_size, lr)
    check_sentence_length(max_len)
    if not clip >= 0:  # NaN too
        raise ValueError(f"clip must be 0 (off) or a gradient norm, got {clip}")
    if pooling not in ("auto", *POOLINGS):
        raise ValueError(f"pooling must be 'auto' or one of {POOLINGS}, got {pooling!r}")
    if not 0 <= warmup_percent <= 1:
        raise ValueError(f"warmup_percent must be in [0, 1], got {warmup_percent}")
    if cross_fit_folds == 1 or cross_fit_folds < 0:
        raise ValueError(f"cross_fit_folds must be 0 (off) or at least 2, got {cross_fit_folds}")
    started = time.perf_counter()
    labels = list(labels)
    settings = FinetuneSettings(epochs, lr, batch_size, warmup_percent, max_len, seed, weight_decay, clip)
    encoder_path = default_encoder_path() if encoder is None else Path(encoder)
    check_max_len(encoder_path, max_len)
    train_split, dev_split = (
        load_any_split(data_path, name, labels, AudioConfig().sample_rate, with_audio=False) for name in ("train", "dev")
    )
    sentences, targets = distinct_pairs(train_split)
    rarest = min(np.bincount(targets, minlength=len(labels)))  # a label with no sentence counts 0
    if cross_fit_folds > rarest:
        raise ValueError(
            f"cross_fit_folds {cross_fit_folds}: every fold needs a sentence of each label, but {data_path} "
            f"has only {rarest} training sentences of its rarest label"
        )

    job = {
        "hyperparameters": dataclasses.asdict(settings), "labels": labels, "pooling": pooling,
        "cross_fit_folds": cross_fit_folds, "encoder": folder_digest(encoder_path),
        "data": json_digest([sentences, targets, dev_split.sentences, dev_split.labels.tolist()]),
    }  # fmt: skip
    # Joined before the state folder is claimed, so that the main process alone claims it: each
    # process on its own would empty and make it at once, and one of them would find it made.
    join_processes(no_cuda)
    job_folder = on_main(lambda: claim_state_folder(Path(out_dir), job, resume))
    fit = functools.partial(_fit, encoder_path, labels, dev_split=dev_split, settings=settings, no_cuda=no_cuda,
                            progress=progress)  # fmt: skip
    tokenizer, model, best, rows = fit(pooling, sentences, targets, desc="finetune",
                                       checkpoint=job_folder / "finetune.safetensors")  # fmt: skip
    out_of_fold = (
        _out_of_fold_states(fit, model.pooling, sentences, targets, _variants(train_split), cross_fit_folds, settings,
                            job_folder)  # fmt: skip
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
    if processes().is_main:
        save_text_classifier(out_dir, tokenizer, model, info, rows, out_of_fold)
        shutil.rmtree(job_folder)
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
    no_cuda: bool,
    progress: bool,
    desc: str,
    checkpoint: Path,
) -> tuple[PreTrainedTokenizerBase, SequenceClassifier, dict, list[dict]]:
    """A classifier fine-tuned from `encoder_path` on (sentences, targets), at its best dev epoch;
    with that epoch's dev metrics and one log row per epoch. Its training state is saved in
    `checkpoint` every epoch, and continued from there when the file exists."""
    engine = Engine(
        EngineSettings(
            name=desc, epochs=settings.epochs, seed=settings.seed, clip=settings.clip,
            warmup_percent=settings.warmup_percent, schedule="linear", best_by="macro_f1", no_cuda=no_cuda,
            progress=progress,
        )  # fmt: skip
    )
    tokenizer, model_encoder, report = load_text_encoder_with_report(encoder_path)
    if pooling == "auto":
        has_pooler = getattr(model_encoder, "pooler", None) is not None
        pooling = "pooler" if has_pooler and not any(k.startswith("pooler.") for k in report.missing_keys) else "mean"
    dropout = getattr(model_encoder.config, "classifier_dropout", None) or model_encoder.config.hidden_dropout_prob
    model = SequenceClassifier(model_encoder, len(labels), pooling, dropout).to(engine.device)
    ids = tokenizer(sentences, truncation=True, max_length=settings.max_len)["input_ids"]

    def collate(rows: list[int]) -> dict[str, torch.Tensor]:
        return {**pad_token_ids(tokenizer, [ids[i] for i in rows]), "labels": torch.tensor([targets[i] for i in rows])}

    batches = DataLoader(range(len(sentences)), batch_size=settings.batch_size, shuffle=True, collate_fn=collate,
                         generator=torch.Generator().manual_seed(settings.seed))  # fmt: skip

    def dev_metrics(m: SequenceClassifier) -> dict:
        logits = predict_sentences(tokenizer, m, dev_split.sentences, settings.max_len, device=engine.device)  # (N_dev, C)
        return score_logits(logits, torch.as_tensor(dev_split.labels), labels)

    fit = engine.fit(
        model,
        torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay),
        batches,
        loss=lambda m, batch: F.cross_entropy(m(batch["input_ids"], batch["attention_mask"]), batch["labels"]),
        evaluate=dev_metrics,
        # A CPU copy in memory (and in the checkpoint): the directory is written once, at the end.
        restore_best=True,
        checkpoint=checkpoint,
        data_order=batches.generator,
    )
    return tokenizer, model, fit.best, fit.rows


def _variants(split: Split) -> dict[str, list[str]]:
    """{normalised training sentence: the normalised `noisy_variants` its clips may read instead}."""
    vocabulary = hangul_vocabulary(split.sentences)
    variants: dict[str, list[str]] = {}
    for sentence in dict.fromkeys(split.sentences):
        heard = map(normalize_text, noisy_variants(sentence, vocabulary))
        variants.setdefault(normalize_text(sentence), []).extend(heard)
    return variants


def _out_of_fold_states(
    fit: Callable[..., tuple[PreTrainedTokenizerBase, SequenceClassifier, dict, list[dict]]],
    pooling: str,
    sentences: list[str],
    targets: list[int],
    variants: dict[str, list[str]],
    folds: int,
    settings: FinetuneSettings,
    job_folder: Path,
) -> dict[str, torch.Tensor]:
    """Each training sentence's last hidden layer (L_i, E), and those of its `variants`, from a
    classifier that `fit` trained on the other folds: stratified by label, seeded, so every fold
    holds every label. A variant that is itself a training sentence keeps that sentence's own. A
    finished fold leaves its states in `job_folder`; a resumed job takes them from there."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=settings.seed)
    training = set(sentences)
    states: dict[str, torch.Tensor] = {}
    for fold, (kept, held_out) in enumerate(splitter.split(sentences, targets), 1):
        finished = job_folder / f"cross-fit-{fold}"
        if finished.is_dir():
            states.update(load_out_of_fold_states(finished))
            continue
        checkpoint = job_folder / f"cross-fit-{fold}.safetensors"
        tokenizer, model, _, _ = fit(pooling, [sentences[i] for i in kept], [targets[i] for i in kept],
                                     desc=f"cross-fit {fold}/{folds}", checkpoint=checkpoint)  # fmt: skip
        held_out_sentences = [sentences[i] for i in held_out]
        held_out_variants = [v for s in held_out_sentences for v in variants.get(s, []) if v not in training]
        texts = list(dict.fromkeys(held_out_sentences + held_out_variants))
        device = next(model.parameters()).device
        fold_states = last_hidden_states(tokenizer, model.encoder.eval(), texts, settings.max_len, device)
        if processes().is_main:
            save_directory(finished, lambda tmp: save_out_of_fold_states(tmp, fold_states))
            checkpoint.unlink()  # four encoders' worth of training state, no longer needed
        states.update(fold_states)
    return states

