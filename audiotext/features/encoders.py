"""Loading a BERT-family text encoder from a Hugging Face directory or from the reference's
legacy KorBERT layout, and saving Hugging Face directories without leaving half-written ones.

Legacy layout (ETRI KorBERT and the reference's fine-tuned `best_model`):

- `bert_config.json`: the classic Google BERT config (vocab_size, hidden_size, ...);
- `pytorch_model.bin` or `best_model.bin`: a plain state dict with `bert.`-prefixed classic
  names (`LayerNorm.gamma`/`beta` in the oldest exports), maybe an MLM head (`cls.`) or the
  reference's classifier head (`fc.`);
- `vocab.korean.rawtext.list` (ETRI: `token<TAB>count` lines after `n_iters=`/`max_length=`
  headers) or `vocab.txt` (one token a line).

Every load reports the keys it left unfilled and the keys it did not use (a warning, and a
`LoadReport` from `load_text_encoder_with_report`); a tensor whose shape does not fit is an error.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import shutil
import unicodedata
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from safetensors import SafetensorError
from transformers import AutoModel, AutoTokenizer, BertConfig, BertTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from audiotext.errors import AudiotextError, DataError
from audiotext.io import holds_files, nearest_existing, readable_as_umask

LEGACY_CONFIG = "bert_config.json"
# Masked-LM pre-training rewrites its model folder after every epoch, with this record of its
# epochs: a folder whose job was stopped holds a model that loads but is not the one asked for.
PRETRAIN_RECORD = "pretrain.json"
# What marks a folder as a text encoder that `save_directory` may replace: run folders and exported
# model folders have a config.json too, and a mistyped --out must not wipe them.
ENCODER_MARKER = "tokenizer_config.json"
LEGACY_WEIGHTS = ("pytorch_model.bin", "best_model.bin")
LEGACY_VOCABS = ("vocab.korean.rawtext.list", "vocab.txt")
_ETRI_VOCAB_HEADERS = ("n_iters=", "max_length=")
_HANGUL_SYLLABLES = ("\uac00", "\ud7a3")
_CONJOINING_JAMO = ("\u1100", "\u11ff")  # what NFD turns syllables into


class CheckpointShapeError(DataError):
    """A checkpoint tensor whose shape differs from the model's; names the key and both shapes."""


@dataclass
class LoadReport:
    path: Path
    layout: str  # "huggingface" or "legacy"
    missing_keys: list[str] = field(default_factory=list)  # in the model, not in the checkpoint: left as initialised
    unexpected_keys: list[str] = field(default_factory=list)  # in the checkpoint, unused by the model

    def describe(self) -> str:
        parts = []
        if self.missing_keys:
            parts.append(
                f"{len(self.missing_keys)} weights not in the checkpoint, left as initialised: "
                + _short(self.missing_keys)
            )
        if self.unexpected_keys:
            parts.append(f"{len(self.unexpected_keys)} checkpoint tensors unused: {_short(self.unexpected_keys)}")
        return f"{self.path} ({self.layout}): " + ("; ".join(parts) if parts else "every weight loaded")


def load_text_encoder(
    path: str | Path, model_class: type[PreTrainedModel] | type[AutoModel] = AutoModel
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """(tokenizer, model) from a Hugging Face directory or a legacy KorBERT directory.

    `model_class` picks the head: AutoModel (encoder only), BertForMaskedLM, ... Keys left unfilled
    or unused are reported with `warnings.warn`; a shape mismatch raises CheckpointShapeError.
    """
    tokenizer, model, report = load_text_encoder_with_report(path, model_class)
    if report.missing_keys or report.unexpected_keys:
        warnings.warn(report.describe(), stacklevel=2)
    return tokenizer, model


def load_text_encoder_with_report(
    path: str | Path, model_class: type[PreTrainedModel] | type[AutoModel] = AutoModel
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel, LoadReport]:
    """As `load_text_encoder`, with the LoadReport returned instead of warned."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"text encoder {path}: no such directory")
    if (path / PRETRAIN_RECORD).is_file():
        record = json.loads((path / PRETRAIN_RECORD).read_text(encoding="utf-8"))
        done, asked = record["epochs_done"], record["hyperparameters"]["epochs"]
        if done < asked:
            raise DataError(f"text encoder {path}: its pre-training stopped after {done} of {asked} epochs; "
                            "finish it with the same `text pretrain` command and --resume")  # fmt: skip
    try:
        if (path / "config.json").is_file():
            return _require_encoder_weights(*_load_huggingface(path, model_class))
        if (path / LEGACY_CONFIG).is_file():
            return _require_encoder_weights(*_load_legacy(path, model_class))
    except AudiotextError:
        raise
    # What transformers, safetensors and torch raise for a folder they cannot read (weights cut
    # short or of another format, a config of another kind): a traceback that never named it.
    except (OSError, EOFError, ValueError, RuntimeError, IndexError, pickle.UnpicklingError, SafetensorError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"text encoder {path}: cannot be loaded ({reason})") from None
    raise FileNotFoundError(
        f"text encoder {path} is not a model directory: it has neither a config.json (Hugging Face) "
        f"nor a {LEGACY_CONFIG} (legacy KorBERT)"
    )


def _require_encoder_weights(tokenizer, model: PreTrainedModel, report: LoadReport) -> tuple:
    """Refuses a checkpoint that lacks weights of the encoder itself (embeddings, layers): a head
    may start untrained (a pooler, an MLM head), the encoder may not: its states would be noise."""
    prefix = model.base_model_prefix + "."
    body = [key for key in report.missing_keys
            if key.removeprefix(prefix).startswith(("embeddings.", "encoder.")) and not key.endswith("position_ids")]  # fmt: skip
    if body:
        raise DataError(f"text encoder {report.path}: {len(body)} of the encoder's own weights are not in its "
                        f"checkpoint ({_short(body, 3)}): weights of another model, or none")  # fmt: skip
    return tokenizer, model, report


def check_max_len(path: Path, max_len: int) -> None:
    """Refuses a `max_len` longer than the encoder at `path` has positions for: its position table
    would be indexed past its end, in the middle of the work."""
    config = path / "config.json" if (path / "config.json").is_file() else path / LEGACY_CONFIG
    positions = None
    with contextlib.suppress(OSError, ValueError, AttributeError):  # no config, not JSON: loading names that
        positions = json.loads(config.read_text(encoding="utf-8")).get("max_position_embeddings")
    if isinstance(positions, int) and max_len > positions:
        raise ValueError(f"max_len {max_len} is longer than the text encoder {path} reads ({positions} positions)")


def _load_huggingface(path: Path, model_class) -> tuple[PreTrainedTokenizerBase, PreTrainedModel, LoadReport]:
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    # Mismatched tensors are let through and refused below, with the key and both shapes named.
    with quiet_transformers():
        model, info = model_class.from_pretrained(
            path, local_files_only=True, output_loading_info=True, ignore_mismatched_sizes=True
        )
    mismatched = info.get("mismatched_keys") or []
    if mismatched:
        key, found, expected = sorted(mismatched)[0]
        raise CheckpointShapeError(
            f"{path}: {key} has shape {tuple(found)} in the checkpoint but {tuple(expected)} in the model"
            + (f" ({len(mismatched) - 1} more tensors do not fit either)" if len(mismatched) > 1 else "")
        )
    embeddings = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > embeddings:  # its last tokens would index past the table (an IndexError mid-run)
        raise CheckpointShapeError(f"{path}: the tokenizer has {len(tokenizer)} tokens but the model {embeddings} embeddings")
    _check_reads_its_vocabulary(tokenizer, path)
    report = LoadReport(path, "huggingface", sorted(info["missing_keys"]), sorted(info["unexpected_keys"]))
    return tokenizer, model, report


def _check_reads_its_vocabulary(tokenizer: PreTrainedTokenizerBase, path: Path, per_script: int = 100) -> None:
    """Refuses a tokenizer that turns most of its own words of a script into [UNK]: loaded from a
    folder without its tokenizer files, transformers builds one of special tokens only, and from a
    vocab.txt without tokenizer_config.json a lower-casing, accent-stripping BERT tokenizer, which
    breaks Hangul syllables into jamo a Korean (or multilingual) vocabulary does not hold. Either
    way the sentences of that script would encode alike, and train, without an error. Each script
    (of a sample of about 3000 words) is probed apart: in a multilingual vocabulary Hangul is a
    fifth of the words."""
    if tokenizer.unk_token_id is None:  # byte-level BPE: every text has tokens
        return
    special = set(tokenizer.all_special_tokens)
    words = [token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
             if token not in special and token.isalpha()]  # fmt: skip
    if not words:
        raise DataError(f"text encoder {path}: its tokenizer holds no word, only {len(special)} special tokens "
                        "(tokenizer.json or vocab.txt and tokenizer_config.json missing?)")  # fmt: skip
    scripts: dict[str, list[str]] = {}
    for word in words[:: max(1, len(words) // 3000)]:
        scripts.setdefault(unicodedata.name(word[0], "?").split()[0], []).append(word)
    for script, sample in scripts.items():
        sample = sample[:: max(1, len(sample) // per_script)]
        unknown = [word for word, ids in zip(sample, tokenizer(sample, add_special_tokens=False)["input_ids"])
                   if tokenizer.unk_token_id in ids]  # fmt: skip
        if len(sample) >= min(20, len(words) // 2) and len(unknown) > len(sample) / 2:
            raise DataError(f"text encoder {path}: its tokenizer reads {len(unknown)} of {len(sample)} of its own "
                            f"{script.lower()} words as {tokenizer.unk_token} (e.g. {unknown[0]!r} -> "
                            f"{tokenizer.tokenize(unknown[0])}): its tokenizer_config.json (lower-casing, accent "
                            "stripping) is missing or wrong")  # fmt: skip


def _load_legacy(path: Path, model_class) -> tuple[PreTrainedTokenizerBase, PreTrainedModel, LoadReport]:
    config_dict = json.loads((path / LEGACY_CONFIG).read_text(encoding="utf-8"))
    config = BertConfig(**config_dict)
    weights = next((path / name for name in LEGACY_WEIGHTS if (path / name).is_file()), None)
    if weights is None:
        raise DataError(f"legacy text encoder {path}: no weights file ({' or '.join(LEGACY_WEIGHTS)})")
    vocab_file = next((path / name for name in LEGACY_VOCABS if (path / name).is_file()), None)
    if vocab_file is None:
        raise DataError(f"legacy text encoder {path}: no vocabulary file ({' or '.join(LEGACY_VOCABS)})")

    vocab = read_vocab(vocab_file)
    # Fewer tokens than embeddings only leaves rows unused; more would index past the table.
    if len(vocab) > config.vocab_size:
        raise CheckpointShapeError(
            f"{vocab_file}: {len(vocab)} tokens but {LEGACY_CONFIG} says vocab_size {config.vocab_size}"
        )
    tokenizer = _bert_tokenizer(vocab, config_dict.get("do_lower_case"))

    model = AutoModel.from_config(config) if model_class is AutoModel else model_class(config)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise DataError(f"{weights}: holds a {type(state).__name__}, expected a state dict of tensors")
    report = load_classic_state_dict(model, state, weights)
    model.eval()
    return tokenizer, model, report


def read_vocab(vocab_file: Path) -> dict[str, int]:
    """Token → id; ETRI's header lines are skipped and `token<TAB>count` keeps the token."""
    vocab: dict[str, int] = {}
    for line in vocab_file.read_text(encoding="utf-8").splitlines():
        if line.startswith(_ETRI_VOCAB_HEADERS):
            continue
        token = line.split("\t")[0].strip()
        if token:
            vocab.setdefault(token, len(vocab))
    return vocab


def _bert_tokenizer(vocab: dict[str, int], do_lower_case: bool | None) -> BertTokenizer:
    # Without a flag in the config, a vocabulary with no capital A-Z is an uncased one (uncased
    # vocabularies still hold symbols such as ℝ that str.isupper calls capitals).
    if do_lower_case is None:
        do_lower_case = not any("A" <= ch <= "Z" for token in vocab if not token.startswith("[") for ch in token)
    # BERT's accent stripping (NFD) breaks Hangul syllables into conjoining jamo: right for a
    # vocabulary built that way (English uncased BERTs), ruinous for a Korean one that has none.
    chars = {ch for token in vocab for ch in token}
    has_syllables = any(_HANGUL_SYLLABLES[0] <= ch <= _HANGUL_SYLLABLES[1] for ch in chars)
    has_jamo = any(_CONJOINING_JAMO[0] <= ch <= _CONJOINING_JAMO[1] for ch in chars)
    strip_accents = False if has_syllables and not has_jamo else None
    return BertTokenizer(vocab=vocab, do_lower_case=do_lower_case, strip_accents=strip_accents)


def classic_to_hf_key(key: str) -> str:
    """Classic BERT names → transformers names: `LayerNorm.gamma/beta` → `.weight/.bias`."""
    return key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


def load_classic_state_dict(model: PreTrainedModel, state: dict[str, torch.Tensor], path: Path) -> LoadReport:
    """Loads `bert.`-prefixed classic keys into `model`, a base BertModel or one with a head;
    `path` (the weights file) names the source in errors and in the report."""
    prefix = model.base_model_prefix + "."
    own = model.state_dict()
    is_base = not any(k.startswith(prefix) for k in own)
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.endswith("position_ids"):
            continue  # a buffer of 0..max_len-1 that transformers rebuilds itself
        key = classic_to_hf_key(key)
        if is_base and key.startswith(prefix):
            key = key[len(prefix) :]
        renamed[key] = tensor
    for key, tensor in renamed.items():
        if key in own and own[key].shape != tensor.shape:
            raise CheckpointShapeError(
                f"{path}: {key} has shape {tuple(tensor.shape)} in the checkpoint "
                f"but {tuple(own[key].shape)} in the model"
            )
    result = model.load_state_dict(renamed, strict=False)
    # Tied output embeddings share the word embeddings' storage, so they are loaded though listed missing.
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = sorted(k for k in result.missing_keys if k not in tied and not k.endswith("position_ids"))
    return LoadReport(path, "legacy", missing, sorted(result.unexpected_keys))


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No load tables or per-file progress bars from transformers while loading or saving a model:
    the LoadReport says what matters once, in our words, and a pre-training epoch saves a model."""
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def check_replaceable(out_dir: Path, marker: str = ENCODER_MARKER, setting: str | None = None) -> None:
    """Refuses an `out_dir` that `save_directory` must not replace (see there), or cannot make."""
    named = f"{setting} {out_dir}" if setting else str(out_dir)
    if holds_files(out_dir) and not (out_dir / marker).is_file():
        raise FileExistsError(f"refusing to replace {named}: it exists and is not a model directory (no {marker})")
    above = nearest_existing(out_dir.parent)
    if not above.is_dir():
        raise FileExistsError(f"cannot write {named}: {above} is a file, not a folder")


def save_directory(out_dir: str | Path, write: Callable[[Path], None], marker: str = ENCODER_MARKER,
                   setting: str | None = None) -> Path:  # fmt: skip
    """Runs `write(tmp)` into a fresh folder beside `out_dir`, then puts it in `out_dir`'s place,
    so a crash never leaves a model directory with a mix of old and new files.

    An existing `out_dir` is replaced only if it is empty or a directory of the kind written, which
    holds the file `marker`: a mistyped path must not wipe a folder of runs. The refusal names the
    folder as `setting` (a flag, say) when given.
    """
    out_dir = Path(out_dir)
    check_replaceable(out_dir, marker, setting)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex}.tmp"
    old = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex}.old"
    try:
        tmp.mkdir()
        with quiet_transformers():
            write(tmp)
        readable_as_umask(tmp)
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out_dir


def _short(keys: list[str], limit: int = 6) -> str:
    return ", ".join(keys[:limit]) + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")
