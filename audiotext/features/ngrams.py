"""Character n-grams of the transcript: the text side of the linear baseline, for corpora too small
to fine-tune a BERT on. TF-IDF weights of the 1- to 3-character n-grams inside words of the
normalised sentence (scikit-learn's `TfidfVectorizer`, `char_wb`, sublinear counts, rows of unit
length), with the vocabulary and IDF weights fitted on the training sentences and kept as JSON in
the run folder.

It answers to the same calls as `TextEncoder`, so the feature cache stores its vectors like
encoder states: one step (1, V) per sentence, V the vocabulary size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from audiotext.features.text import normalize_text
from audiotext.io import json_digest, write_json

NGRAMS_FILE = "char_ngrams.json"
NGRAM_RANGE = (1, 3)


def _vectorizer(vocabulary: dict[str, int] | None = None) -> TfidfVectorizer:
    return TfidfVectorizer(analyzer="char_wb", ngram_range=NGRAM_RANGE, sublinear_tf=True, dtype=np.float32,
                           vocabulary=vocabulary)  # fmt: skip


class CharNgramEncoder:
    max_len = 1  # one step per sentence: what the cache keys text features by

    def __init__(self, vocabulary: dict[str, int], idf: Sequence[float], path: Path | None = None) -> None:
        self.vectorizer = _vectorizer(vocabulary)
        self.vectorizer.idf_ = np.asarray(idf, dtype=np.float32)
        self.path = path  # where the fitted vocabulary lives (for messages)

    @classmethod
    def fit(cls, sentences: Sequence[str]) -> "CharNgramEncoder":
        fitted = _vectorizer().fit([normalize_text(s) for s in sentences])
        return cls({k: int(v) for k, v in fitted.vocabulary_.items()}, fitted.idf_.tolist())

    @classmethod
    def load(cls, path: str | Path) -> "CharNgramEncoder":
        stored = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(stored["vocabulary"], stored["idf"], Path(path))

    def save(self, path: str | Path) -> None:
        write_json(path, {"ngram_range": list(NGRAM_RANGE), "vocabulary": self.vectorizer.vocabulary,
                          "idf": self.vectorizer.idf_.tolist()})  # fmt: skip
        self.path = Path(path)

    @property
    def hidden_size(self) -> int:
        return len(self.vectorizer.vocabulary)

    @property
    def fingerprint(self) -> str:
        return json_digest([self.vectorizer.vocabulary, self.vectorizer.idf_.tolist()])

    def encode(self, sentences: Sequence[str], progress: bool = True) -> list[np.ndarray]:
        """(1, V) float32 TF-IDF vector of each sentence."""
        rows = self.vectorizer.transform([normalize_text(s) for s in sentences]).toarray()  # (S, V)
        return [row[None] for row in rows]
