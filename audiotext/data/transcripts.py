"""Transcripts as a speech recogniser writes them: misheard and lost syllables, merged and split
words, no punctuation. The demo corpus's `test_stt` split is made with it, and training can corrupt
a share of its transcripts with it (`--transcript_noise`) so that recogniser errors cost less.

Substitutions are Korean-specific (confusable jamo of Hangul syllables); the spacing and punctuation
errors apply to any script.
"""

from __future__ import annotations

import hashlib
import unicodedata
from typing import Iterable

import numpy as np


def hangul_vocabulary(sentences: Iterable[str]) -> frozenset[str]:
    """The Hangul syllables of `sentences`: those a recogniser's language model would write."""
    return frozenset(char for sentence in sentences for char in composed(sentence) if is_hangul(char))


def composed(text: str) -> str:
    """`text` in NFC: decomposed Hangul (NFD, as macOS writes file names and some editors text) is a
    run of jamo with no syllable to mishear."""
    return unicodedata.normalize("NFC", text)


# Hangul syllable = 0xAC00 + (initial * 21 + medial) * 28 + final.
_INITIALS = "ㄱㄲㄴㄷㄸㄹㅁㅂㅃㅅㅆㅇㅈㅉㅊㅋㅌㅍㅎ"
_MEDIALS = "ㅏㅐㅑㅒㅓㅔㅕㅖㅗㅘㅙㅚㅛㅜㅝㅞㅟㅠㅡㅢㅣ"
_FINALS = ("", *"ㄱㄲㄳㄴㄵㄶㄷㄹㄺㄻㄼㄽㄾㄿㅀㅁㅂㅄㅅㅆㅇㅈㅊㅋㅌㅍㅎ")
# Jamo a recognizer mixes up: lax/tense/aspirated consonants, vowels merged in Seoul speech
# (ㅐ/ㅔ, 의 read as 이 or 에), and codas that all sound as [t], [k] or [p], or assimilate (ㄴ/ㅇ).
_CONFUSABLE = (
    (_INITIALS, ("ㄱㄲㅋ", "ㄷㄸㅌ", "ㅂㅃㅍ", "ㅈㅉㅊ", "ㅅㅆ")),
    (_MEDIALS, ("ㅐㅔ", "ㅒㅖ", "ㅙㅞㅚ", "ㅓㅗ", "ㅜㅡ", "ㅕㅛ", "ㅢㅣ", "ㅢㅔ")),
    (_FINALS, ("ㄷㅅㅆㅈㅊㅌㅎ", "ㄱㄲㅋ", "ㅂㅍ", "ㄴㅇ")),
)
STT_VERBATIM = 0.15  # share of clips the recognizer gets exactly right
STT_SYLLABLE_ERRORS = (0.3, 0.5, 0.2)  # probability of 0, 1, 2 misheard syllables
STT_DROPPED_SYLLABLE = 0.25  # share of misheard syllables lost rather than confused
STT_MERGED_SPACE = 0.15  # per space
STT_SPLIT_WORD = 0.1  # per sentence
STT_NO_PUNCTUATION = 0.7  # per sentence: most recognizers emit no punctuation
NOISY_VARIANTS = 3  # recogniser transcripts per sentence that `--transcript_noise` chooses from


def is_hangul(char: str) -> bool:
    return "가" <= char <= "힣"


def _confused_syllables(syllable: str, vocabulary: frozenset[str]) -> list[str]:
    """Syllables one confusable jamo away that the recognizer can write (those in `vocabulary`)."""
    initial, rest = divmod(ord(syllable) - ord("가"), 21 * 28)
    parts = (initial, *divmod(rest, 28))
    confused = []
    for slot, (alphabet, groups) in enumerate(_CONFUSABLE):
        jamo = alphabet[parts[slot]]
        for alternative in {a for group in groups if jamo and jamo in group for a in group} - {jamo}:
            swapped = list(parts)
            swapped[slot] = alphabet.index(alternative)
            confused.append(chr(ord("가") + (swapped[0] * 21 + swapped[1]) * 28 + swapped[2]))
    # Sorted: set order varies between processes, and the draw must not.
    return sorted(c for c in confused if c in vocabulary)


def recogniser_transcript(sentence: str, vocabulary: frozenset[str], rng: np.random.Generator) -> str:
    """What a speech recognizer might have heard: misheard or lost syllables, spacing, no punctuation.

    Misheard syllables are similar-sounding ones from `vocabulary`: a recognizer's language model
    writes syllables it knows, not arbitrary jamo combinations such as 홒.
    """
    sentence = composed(sentence)
    if rng.random() < STT_VERBATIM:
        return sentence
    chars = list(sentence)
    for _ in range(rng.choice(len(STT_SYLLABLE_ERRORS), p=STT_SYLLABLE_ERRORS)):
        syllables = [i for i, char in enumerate(chars) if is_hangul(char)]
        if rng.random() < STT_DROPPED_SYLLABLE and len(syllables) > 4:
            chars[syllables[rng.integers(len(syllables))]] = ""
            continue
        for i in rng.permutation(syllables):
            confused = _confused_syllables(chars[i], vocabulary)
            if confused:
                chars[i] = confused[rng.integers(len(confused))]
                break
    words = "".join(chars).split()
    text = words[0]
    for word in words[1:]:
        text += word if rng.random() < STT_MERGED_SPACE else " " + word
    if rng.random() < STT_SPLIT_WORD:
        cuts = [i for i in range(1, len(text)) if is_hangul(text[i - 1]) and is_hangul(text[i])]
        if cuts:
            cut = cuts[rng.integers(len(cuts))]
            text = text[:cut] + " " + text[cut:]
    if rng.random() < STT_NO_PUNCTUATION:
        text = " ".join(text.translate(str.maketrans("", "", ".?!")).split())
    return text


def noisy_variants(sentence: str, vocabulary: frozenset[str]) -> list[str]:
    """NOISY_VARIANTS recogniser transcripts of `sentence` (`recogniser_transcript`), the same in
    every run: a cross-fitted text encoder stores their states from the encoder that did not learn
    the sentence, as it does the sentence's own (a transcript drawn afresh would be encoded by one
    that learnt a sentence one syllable away, and tell the model its label)."""
    seed = int.from_bytes(hashlib.sha256(composed(sentence).encode("utf-8")).digest()[:8], "little")
    return [recogniser_transcript(sentence, vocabulary, np.random.default_rng([seed, k]))
            for k in range(NOISY_VARIANTS)]  # fmt: skip
