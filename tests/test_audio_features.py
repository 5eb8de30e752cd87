"""Audio features: MFCC equals librosa's torchaudio-equivalent pipeline, batching and trimming are
invisible, and bad input fails with a reason."""

from __future__ import annotations

import io
import shutil
import subprocess
import warnings

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from audiotext.config import AudioConfig
from audiotext.errors import DataError
from audiotext.features.audio import (
    F0_RANGE,
    FLOAT_PEAK_LIMIT,
    MFCC,
    PROSODY_WIDTH,
    check_float_samples,
    clip_features,
    int16_samples,
    iter_audio_features,
    pitch_frames,
    prosody,
    resample,
    trim_zeros,
    yin,
)

# float32 MFCCs against a float64 librosa reference. Coefficients span about ±600 (c0), so this is
# a relative error of a few 1e-6; the residue is float32 rounding of the window and the spectrum.
MFCC_ATOL = 2e-3


def harmonic(sr: int, seconds: float = 1.0, f0: float = 180.0) -> np.ndarray:
    """A deterministic voiced-like signal: harmonics of f0 with 1/k amplitudes and a slow vibrato."""
    t = np.arange(int(sr * seconds)) / sr
    phase = 2 * np.pi * f0 * t + 3.0 * np.sin(2 * np.pi * 5.0 * t)
    wave = sum(np.sin(k * phase) / k for k in range(1, 12 if sr >= 16000 else 6))
    return (0.3 * wave * np.hanning(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, int]:
    """A Korean espeak-ng utterance as int16 samples and its rate."""
    assert shutil.which("espeak-ng"), "espeak-ng is missing: `make test` installs it"
    command = ["espeak-ng", "-v", "ko", "--stdout", "안녕하세요 오늘 날씨가 정말 좋네요"]
    out = subprocess.run(command, check=True, capture_output=True).stdout
    audio, sr = sf.read(io.BytesIO(out), dtype="int16")
    return audio, sr


def librosa_mfcc(wave: np.ndarray, sr: int, n_fft: int = 400, n_mels: int = 128, n_mfcc: int = 40) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Empty filters detected")
        mel = librosa.feature.melspectrogram(
            y=wave.astype(np.float64), sr=sr, n_fft=n_fft, hop_length=n_fft // 2, n_mels=n_mels,
            htk=True, norm=None, center=True, pad_mode="reflect", power=2.0,
        )  # fmt: skip
    db = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=80)
    return librosa.feature.mfcc(S=db, n_mfcc=n_mfcc, dct_type=2, norm="ortho").T  # (T, n_mfcc)


@pytest.mark.parametrize("sr", [16000, 8000])
def test_mfcc_equals_librosa_on_speech(speech, sr):
    audio, orig_sr = speech
    wave = resample(audio, orig_sr, sr)
    ours = MFCC(sr)(torch.from_numpy(wave)).numpy()
    ref = librosa_mfcc(wave, sr)
    assert ours.shape == ref.shape == (1 + len(wave) // 200, 40)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=MFCC_ATOL)


@pytest.mark.parametrize("sr,n_fft,n_mels,n_mfcc", [(16000, 400, 128, 40), (8000, 256, 40, 13)])
def test_mfcc_equals_librosa_on_harmonic_signal(sr, n_fft, n_mels, n_mfcc):
    wave = harmonic(sr)
    ours = MFCC(sr, n_mfcc=n_mfcc, n_fft=n_fft, n_mels=n_mels)(torch.from_numpy(wave)).numpy()
    np.testing.assert_allclose(ours, librosa_mfcc(wave, sr, n_fft, n_mels, n_mfcc), rtol=0, atol=MFCC_ATOL)


def test_batched_equals_per_item():
    # Different loudness per item: a batch-wide top_db floor (torchaudio's for 3-D input) would differ.
    waves = torch.from_numpy(np.stack([harmonic(16000, f0=f0) * g for f0, g in [(120, 1.0), (210, 0.01), (300, 0.3)]]))
    mfcc = MFCC(16000)
    batched = mfcc(waves)
    assert batched.shape == (3, 1 + 16000 // 200, 40)
    for i in range(3):
        torch.testing.assert_close(batched[i], mfcc(waves[i]), rtol=0, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mfcc_on_cuda_equals_cpu():
    waves = torch.from_numpy(np.stack([harmonic(16000, f0=f0) for f0 in (120, 250)]))
    mfcc = MFCC(16000)
    torch.testing.assert_close(mfcc.to("cuda")(waves.to("cuda")).cpu(), mfcc.cpu()(waves), rtol=0, atol=1e-3)
    cfg = AudioConfig()
    clip = (harmonic(48000) * 20000).astype(np.int16)
    np.testing.assert_allclose(clip_features(clip, cfg, MFCC(16000).to("cuda")), clip_features(clip, cfg), atol=1e-3)


def test_mfcc_module_moves_with_its_buffers():
    mfcc = MFCC(16000, n_mfcc=13, n_mels=40)
    assert {name for name, _ in mfcc.named_buffers()} == {"window", "fbank", "dct"}
    assert mfcc.fbank.shape == (201, 40) and mfcc.dct.shape == (40, 13)
    # Orthonormal DCT rows: the transform preserves energy.
    torch.testing.assert_close(mfcc.dct.T @ mfcc.dct, torch.eye(13), rtol=0, atol=1e-6)
    assert mfcc.hop_length == 200


@pytest.mark.parametrize(
    "kwargs,reason",
    [
        (dict(sample_rate=16000, n_mfcc=129), "n_mfcc"),
        (dict(sample_rate=16000, n_fft=0), "n_fft"),
        (dict(sample_rate=16000, n_fft=1), "hop_length"),
        (dict(sample_rate=0), "sample_rate"),
        (dict(sample_rate=16000, top_db=-1), "top_db"),
    ],
)
def test_invalid_arguments_raise(kwargs, reason):
    with pytest.raises(ValueError, match=reason):
        MFCC(**kwargs)


def test_trim_strips_only_the_ends():
    audio = np.array([0, 0, 3, 0, 0, -2, 0, 5, 0, 0, 0], dtype=np.int16)
    np.testing.assert_array_equal(trim_zeros(audio), [3, 0, 0, -2, 0, 5])
    np.testing.assert_array_equal(trim_zeros(np.array([1, 0, 2])), [1, 0, 2])
    assert trim_zeros(np.zeros(5, dtype=np.int16)).size == 0 and trim_zeros(np.zeros(0)).size == 0
    np.testing.assert_array_equal(trim_zeros(np.array([0.0, -0.0, 7.0, 0.0])), [7.0])  # -0.0 is a zero too


def test_resample_length_rate_and_scaling():
    t = np.arange(48000) / 48000
    audio = (0.5 * 32767 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    out = resample(audio, 48000, 16000)
    assert out.dtype == np.float32 and len(out) == 16000
    assert abs(np.abs(out[1000:-1000]).max() - 0.5) < 0.01  # int16 scaled by 32768
    assert np.argmax(np.abs(np.fft.rfft(out))) == 1000  # 1 Hz bins: the tone stays at 1 kHz
    # Above the new Nyquist frequency: filtered out, not folded back.
    alias = resample(np.sin(2 * np.pi * 6000 * t).astype(np.float32), 48000, 8000)
    assert np.abs(alias[500:-500]).max() < 1e-3
    np.testing.assert_array_equal(resample(np.array([-32768, 16384], np.int16), 16000, 16000), [-1.0, 0.5])
    with pytest.raises(ValueError, match="dtype"):
        resample(np.array([1, 2], dtype=np.uint8), 16000, 8000)


def test_clip_features_shape_and_cap():
    cfg = AudioConfig(max_len_for_audio=50)
    clip = (harmonic(48000) * 20000).astype(np.int16)
    clip = np.concatenate([np.zeros(4800, np.int16), clip, np.zeros(9600, np.int16)])
    feats = clip_features(clip, cfg)
    assert feats.dtype == np.float32 and feats.shape == (50, 40)
    uncapped = clip_features(clip, AudioConfig(max_len_for_audio=10_000))
    nonzero = np.flatnonzero(clip)
    n_trimmed = round((nonzero[-1] + 1 - nonzero[0]) / 3)  # the zero padding (0.3 s, 30 frames) is gone
    assert uncapped.shape == (1 + n_trimmed // 200, 40)
    np.testing.assert_array_equal(uncapped[:50], feats)
    assert [f.shape for f in iter_audio_features([clip, clip[:48000]], cfg, progress=False)] == [(50, 40)] * 2


def test_short_clip_error_says_how_short():
    clip = np.concatenate([np.zeros(1000, np.int16), np.ones(300, np.int16), np.zeros(1000, np.int16)])
    with pytest.raises(ValueError, match=r"has 100 samples at 16000 Hz .* needs at least one window of 400"):
        clip_features(clip, AudioConfig())
    with pytest.raises(ValueError, match="has 0 samples"):
        clip_features(np.zeros(48000, np.int16), AudioConfig())


def test_clip_features_rejects_an_mfcc_built_for_other_settings():
    clip = (harmonic(48000) * 20000).astype(np.int16)
    with pytest.raises(ValueError, match="disagrees"):
        clip_features(clip, AudioConfig(resample_rate=8000), MFCC(16000))


def test_prosody_finds_the_pitch_of_a_tone_and_tells_voice_from_noise():
    sr, hop = 8000, 200
    t = np.arange(sr) / sr
    tone = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    noise = np.random.default_rng(0).standard_normal(sr).astype(np.float32) * 0.1
    voiced, unvoiced = prosody(tone, sr, hop), prosody(noise, sr, hop)
    assert voiced.shape == (1 + sr // hop, PROSODY_WIDTH)
    assert np.exp(np.median(voiced[:, 0])) == pytest.approx(220, rel=0.02)
    assert voiced[5:-5, 1].min() > 0.9 and unvoiced[:, 1].mean() < 0.3
    assert np.abs(voiced[5:-5, 3:]).max() < 0.05  # a steady tone: flat contours, zero deltas


@pytest.mark.parametrize("sr", [8000, 16000])
def test_yin_equals_librosa_yin_to_the_bit(speech, sr):
    audio, orig_sr = speech
    rng = np.random.default_rng(2)
    clips = {
        "speech": resample(audio, orig_sr, sr),
        "tone with vibrato": harmonic(sr),
        "noise": (rng.standard_normal(sr) * 0.1).astype(np.float32),
        "silence between bursts": np.concatenate([np.zeros(sr // 2, np.float32), harmonic(sr, 0.3), np.zeros(sr // 4, np.float32)]),
    }  # fmt: skip
    low, high = F0_RANGE
    hop = 200
    for what, wave in clips.items():
        frames = pitch_frames(wave, sr, hop)
        n_frames, width = frames.shape
        assert n_frames == 1 + len(wave) // hop and width >= 2 * sr / low
        expected = librosa.yin(np.pad(wave, (0, width)), fmin=low, fmax=high, sr=sr, frame_length=width, hop_length=hop)
        np.testing.assert_array_equal(yin(frames, sr, low, high), expected[:n_frames], err_msg=what)


def test_prosody_frames_line_up_with_the_mfcc_frames():
    clip = (np.random.default_rng(1).standard_normal(48000) * 3000).astype(np.int16)
    for rate in (8000, 16000):
        mfcc_only = clip_features(clip, AudioConfig(resample_rate=rate))
        both = clip_features(clip, AudioConfig(resample_rate=rate, features="mfcc+prosody"))
        assert both.shape == (mfcc_only.shape[0], mfcc_only.shape[1] + PROSODY_WIDTH)
        np.testing.assert_array_equal(both[:, : mfcc_only.shape[1]], mfcc_only)
    with pytest.raises(ValueError, match="audio_features = 'pitch': must be one of mfcc, mfcc\\+prosody"):
        AudioConfig(features="pitch")


def test_float_samples_must_be_finite_and_no_louder_than_the_limit():
    check_float_samples(np.array([0.5, -FLOAT_PEAK_LIMIT, FLOAT_PEAK_LIMIT]))  # the limit itself is allowed
    check_float_samples(np.zeros(0))
    with pytest.raises(DataError, match=r"^float samples must lie in \[-1, 1\], these peak at 2.01 \(integer"):
        check_float_samples(np.array([0.1, -2.01]))
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(DataError, match="^the samples hold NaN or infinite values$"):
            check_float_samples(np.array([0.0, bad]))
    with pytest.raises(DataError, match="float samples must lie"):
        resample(np.array([300.0, -200.0]), 16000, 8000)  # int16 values stored as floats


def test_wide_integer_samples_are_scaled_by_their_range_unless_they_hold_int16_values():
    speech = np.array([-32768, 16384, 3], np.int16)
    wide = speech.astype(np.int32) * 65536  # 32-bit PCM: the same clip
    np.testing.assert_array_equal(resample(wide, 16000, 16000), resample(speech, 16000, 16000))
    np.testing.assert_array_equal(int16_samples(wide), [-32767, 16384, 3])  # full scale is 32767, as for floats
    for dtype in (np.int32, np.int64):  # np.asarray of a list of int16 values gives int64
        with pytest.raises(DataError, match=rf"^{np.dtype(dtype)} samples must use {np.dtype(dtype)}'s range, these "
                                            rf"peak at 32768 \(int16 sample values stored as {np.dtype(dtype)}\?"):
            resample(speech.astype(dtype), 16000, 8000)
        with pytest.raises(DataError, match="these peak at 32768"):
            int16_samples(speech.astype(dtype))
    with pytest.raises(DataError, match="signed integers or floats, got dtype uint8"):
        int16_samples(np.array([1, 2], np.uint8))


@pytest.mark.parametrize("rates", [(0, 16000), (16000, 0), (-8000, 16000)])
def test_resample_refuses_rates_that_are_not_positive(rates):
    with pytest.raises(DataError, match="sample rates must be positive"):
        resample(np.zeros(100, np.int16), *rates)


def test_clip_features_build_the_mfcc_the_settings_ask_for_and_take_one_window():
    cfg = AudioConfig(sample_rate=8000, resample_rate=8000, n_mfcc=13, n_fft_size=512, n_mels=64)
    clip = (np.random.default_rng(2).standard_normal(8000) * 3000).astype(np.int16)
    own = clip_features(clip, cfg)
    given = clip_features(clip, cfg, MFCC(8000, n_mfcc=13, n_fft=512, n_mels=64))
    assert own.shape == (8000 // 256 + 1, 13) and np.array_equal(own, given)
    assert clip_features(clip[:512], cfg).shape == (1 + 512 // 256, 13)  # one window is enough (centred frames)
    with pytest.raises(DataError, match="clip has 511 samples at 8000 Hz"):
        clip_features(clip[:511], cfg)
