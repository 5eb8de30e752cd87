"""Text features with the packaged MiniLM: no padding leaks into the states, truncation keeps the
special tokens, and each distinct sentence is encoded once; character n-grams are the TF-IDF
vectors they promise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiotext.features.ngrams import CharNgramEncoder
from audiotext.features.text import TextEncoder, default_encoder_path, normalize_text

SENTENCES = [
    "오늘은 정말 행복한 하루였어요!",
    "왜 이렇게 늦었어?",
    "I can't believe it.",
    "무서워",
    "그 사람이 그런 말을 했다니 정말 믿을 수가 없어. 너무 화가 나서 잠이 안 와.",
]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(None, max_len=64, batch_size=8)


def real_token_ids(encoder: TextEncoder, sentence: str) -> list[int]:
    return encoder.tokenizer(normalize_text(sentence), truncation=True, max_length=encoder.max_len)["input_ids"]


def test_default_encoder_is_the_packaged_minilm(encoder):
    assert default_encoder_path().joinpath("config.json").is_file()
    assert encoder.hidden_size == 384
    assert not encoder.model.training
    assert not any(p.requires_grad for p in encoder.model.parameters())


def test_output_has_one_state_per_real_token(encoder):
    states = encoder.encode(SENTENCES, progress=False)
    assert len(states) == len(SENTENCES)
    for sentence, state in zip(SENTENCES, states):
        assert state.shape == (len(real_token_ids(encoder, sentence)), 384)
        assert state.dtype == torch.float32 and state.device.type == "cpu"


def test_batched_equals_one_at_a_time(encoder):
    # The sentences differ in length, so the batch pads all but the longest.
    batched = encoder.encode(SENTENCES, progress=False)
    for sentence, state in zip(SENTENCES, batched):
        torch.testing.assert_close(state, encoder.encode([sentence], progress=False)[0], rtol=0, atol=1e-5)


def test_truncation_keeps_cls_first_and_sep_last(encoder):
    long = " ".join(["그 사람이 그런 말을 했다니 정말 믿을 수가 없어"] * 20)
    ids = real_token_ids(encoder, long)
    tok = encoder.tokenizer
    assert len(ids) == encoder.max_len
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert ids[1:-1] == tok(normalize_text(long), add_special_tokens=False)["input_ids"][: encoder.max_len - 2]
    assert encoder.encode([long], progress=False)[0].shape == (encoder.max_len, 384)


def test_distinct_sentences_are_encoded_once(encoder):
    before = encoder.n_encoded
    # The third normalises to the first: same text once HTML entities and spacing are folded.
    states = encoder.encode(["오늘 날씨", "내일", "오늘&nbsp;&nbsp;날씨", "오늘 날씨"], progress=False)
    assert encoder.n_encoded - before == 2
    assert states[0] is states[2] is states[3] and states[1] is not states[0]
    assert encoder.encode([], progress=False) == []


def test_states_are_ordinary_tensors_usable_in_training(encoder):
    state = encoder.encode(["행복해요"], progress=False)[0]
    assert not state.is_inference() and not state.requires_grad
    torch.nn.Linear(384, 7)(state).sum().backward()  # would fail on an inference tensor


@pytest.mark.parametrize(
    "raw, any_script, korean",
    [
        ("안녕&amp;하세요", "안녕 하세요", "안녕 하세요"),
        ("&lt;정말&gt; &quot;좋아&quot;", "정말 좋아", "정말 좋아"),
        ("좋아요 😀!!  진짜?", "좋아요 !! 진짜?", "좋아요 !! 진짜?"),
        ("ㅋㅋㅋ ㅠㅠ 웃겨", "ㅋㅋㅋ ㅠㅠ 웃겨", "ㅋㅋㅋ 웃겨"),  # the reference keeps consonant jamo, not vowel jamo
        ("Hello,\tworld\n—café", "Hello world café", "Hello world caf"),
        ("  a1 b2  ", "a1 b2", "a1 b2"),
        ("😀…", "", ""),
        ("你好，世界", "你好 世界", ""),
        ("Привет, мир!", "Привет мир!", "!"),
        ("नमस्ते दुनिया", "नमस्ते दुनिया", ""),  # vowel signs are marks (Mc, Mn): kept with their letters
        ("\u1112\u1161\u11ab\u1100\u1173\u11af", "한글", "한글"),  # decomposed (NFD) Hangul is composed first
        ("❤️", "", ""),  # a heart and its variation selector (a mark): no word
        ("\u0301 좋아 !\u0301", "좋아 !", "좋아 !"),  # marks on no letter or digit
        ("a\u20dd 1\u20e3", "a\u20dd 1\u20e3", "a 1"),  # marks on a letter or a digit are theirs
        ("망쳤잖아！ ＡＢＣ１２？ 끝。", "망쳤잖아! ABC12? 끝.", "망쳤잖아! ABC12? 끝."),  # full-width forms as ASCII
        ("안녕\u200b하세요\u00ad요 \ufeff네", "안녕하세요요 네", "안녕하세요요 네"),  # invisible format characters go
    ],
)
def test_normalize_text_keeps_letters_and_digits_of_any_script_or_only_the_references(raw, any_script, korean):
    assert normalize_text(raw) == any_script
    assert normalize_text(raw, "korean") == korean


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        TextEncoder(tmp_path / "no-such-model")
    with pytest.raises(FileNotFoundError, match="config.json"):
        TextEncoder(tmp_path)


def test_char_ngrams_are_sublinear_tf_idf_of_in_word_ngrams_of_the_normalised_sentence(tmp_path):
    encoder = CharNgramEncoder.fit(["기뻐요 정말", "무서워요!", "정말 화나", "기뻐"])
    vocabulary = encoder.vectorizer.vocabulary
    assert encoder.hidden_size == len(vocabulary) and {"정말", " 정", "말 ", "!"} <= set(vocabulary)
    assert all(1 <= len(ngram) <= 3 and " " not in ngram.strip() for ngram in vocabulary)  # never across words
    [row] = encoder.encode(["정말 정말 기뻐요"])
    assert row.shape == (1, len(vocabulary)) and row.dtype == np.float32
    assert np.linalg.norm(row) == pytest.approx(1.0)
    idf = encoder.vectorizer.idf_
    # "정말" twice weighs 1 + ln 2 times its IDF; "기뻐" once, its IDF.
    expected = (1 + np.log(2)) * idf[vocabulary["정말"]] / idf[vocabulary["기뻐"]]
    assert row[0, vocabulary["정말"]] / row[0, vocabulary["기뻐"]] == pytest.approx(expected, rel=1e-5)
    assert np.array_equal(encoder.encode(["  정말\t기뻐요&nbsp;"])[0], encoder.encode(["정말 기뻐요"])[0])
    # Of a word the training sentences never had, only the space that pads every word is known.
    assert np.flatnonzero(encoder.encode(["xyz"])[0]).tolist() == [vocabulary[" "]]

    encoder.save(tmp_path / "ngrams.json")
    assert encoder.path == tmp_path / "ngrams.json"  # where messages say the vocabulary lives
    loaded = CharNgramEncoder.load(tmp_path / "ngrams.json")
    assert loaded.path == tmp_path / "ngrams.json" and loaded.fingerprint == encoder.fingerprint
    assert np.array_equal(loaded.encode(["정말 정말 기뻐요"])[0], row)
    assert CharNgramEncoder.fit(["기뻐요 정말", "무서워요!"]).fingerprint != encoder.fingerprint
