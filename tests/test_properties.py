"""Property-based tests: random arrays, rates, bytes, strings and settings fed to the feature,
loading, configuration and prediction paths. Each either works, giving what its contract promises,
or raises one of our own errors (`AudiotextError`), whose message names the input: never another
exception, never a NaN."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from audiotext.config import AudioConfig, ModelConfig, TrainConfig
from audiotext.data.media import load_audio
from audiotext.errors import AudiotextError
from audiotext.features.audio import MFCC, clip_features
from audiotext.features.text import normalize_text
from audiotext.inference.recognizer import EmotionRecognizer

FEATURES = AudioConfig(resample_rate=8000, max_len_for_audio=50)
SHARED_MFCC = MFCC(FEATURES.resample_rate, n_mfcc=FEATURES.n_mfcc, n_fft=FEATURES.n_fft_size, n_mels=FEATURES.n_mels)
RATES = st.integers(min_value=1000, max_value=96000)
SAMPLES = st.one_of(
    arrays(np.int16, st.integers(0, 12000)),
    arrays(np.float32, st.integers(0, 12000), elements=st.floats(-1, 1, width=32)),
    arrays(np.float64, st.integers(0, 3000)),  # any float64 at all: NaN, inf, huge
)
QUICK = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@QUICK
@given(samples=SAMPLES, rate=RATES)
def test_features_of_any_array_are_finite_or_refused(samples, rate):
    try:
        features = clip_features(samples, AudioConfig(**{**FEATURES.__dict__, "sample_rate": rate}), SHARED_MFCC)
    except AudiotextError:
        return
    assert features.dtype == np.float32 and features.shape[1] == FEATURES.n_mfcc
    assert 1 <= len(features) <= FEATURES.max_len_for_audio and np.isfinite(features).all()


@QUICK
@given(data=st.binary(max_size=4096), suffix=st.sampled_from([".wav", ".flac", ".mp3", ".m2ts", ""]))
def test_any_bytes_load_as_audio_or_are_refused_by_name(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("bytes") / f"clip{suffix}"
    path.write_bytes(data)
    try:
        samples, rate = load_audio(path)
    except AudiotextError as err:
        assert str(path) in str(err)
        return
    assert samples.ndim == 1 and len(samples) > 0 and rate > 0
    assert samples.dtype == np.int16 or np.isfinite(samples).all()


KEPT = {"L", "M", "N"}


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_normalised_text_keeps_only_letters_digits_and_three_marks_and_is_stable(text):
    for alphabet in ("any", "korean"):
        once = normalize_text(text, alphabet)
        assert normalize_text(once, alphabet) == once  # idempotent
        assert once == once.strip() and "  " not in once
        assert all(c == " " or c in ".!?" or unicodedata.category(c)[0] in KEPT for c in once)
        # a mark is kept only on a letter or a digit (or a mark on one)
        assert all(unicodedata.category(c)[0] != "M" or (i and unicodedata.category(once[i - 1])[0] in KEPT)
                   for i, c in enumerate(once))  # fmt: skip
    assert set(normalize_text(text, "korean").replace(" ", "")) <= set(normalize_text(text).replace(" ", ""))


@settings(max_examples=200, deadline=None)
@given(n_mfcc=st.integers(-5, 300), n_mels=st.integers(-5, 300), rate=st.integers(-10, 10**6), max_len=st.integers(-5, 10**4))
def test_audio_settings_are_valid_or_refused_as_a_setting(n_mfcc, n_mels, rate, max_len):
    try:
        AudioConfig(n_mfcc=n_mfcc, n_mels=n_mels, sample_rate=rate, max_len_for_audio=max_len)
    except AudiotextError as err:
        assert " = " in str(err)  # names the setting and its value
        return
    assert 1 <= n_mfcc <= n_mels and rate >= 1000 and max_len >= 3


@settings(max_examples=200, deadline=None)
@given(
    lr=st.floats(allow_nan=True, allow_infinity=True),
    batch_size=st.integers(-3, 100),
    dropout=st.floats(-1, 2),
    heads=st.integers(-2, 12),
    modality=st.sampled_from(["cross", "audio", "video", "linear"]),
)
def test_model_and_training_settings_are_valid_or_refused_as_a_setting(lr, batch_size, dropout, heads, modality):
    try:
        TrainConfig(lr=lr, batch_size=batch_size)
        ModelConfig(modality=modality, out_dropout=dropout, num_heads=heads)
    except AudiotextError:
        return
    assert lr > 0 and batch_size >= 1 and 0 <= dropout < 1 and heads >= 1 and modality != "video"


@pytest.fixture(scope="module")
def recognizer(trained_runs) -> EmotionRecognizer:
    return EmotionRecognizer.from_pretrained(trained_runs["mult"], device="cpu")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(samples=SAMPLES, rate=RATES, text=st.text(max_size=80))
def test_prediction_on_any_input_gives_probabilities_or_is_refused(recognizer, samples, rate, text):
    if not text.strip():
        text = "말"  # a blank transcript would call the recogniser: another test's concern
    try:
        scores = recognizer.predict(samples, text=text, sampling_rate=rate)
    except AudiotextError:
        return
    probabilities = np.array([s["score"] for s in scores])
    assert len(scores) == len(recognizer.labels) and np.isfinite(probabilities).all()
    assert probabilities.sum() == pytest.approx(1, abs=1e-4) and list(probabilities) == sorted(probabilities, reverse=True)
