"""Audio features: resampling, edge-zero trimming and torchaudio-compatible MFCCs.

`MFCC` reproduces torchaudio's `MFCC(sample_rate=sr, n_mfcc=40, log_mels=False,
melkwargs={'n_fft': 400})` without torchaudio: periodic Hann window, hop n_fft // 2, centred frames
with reflect padding, power spectrum, HTK mel bands without filter normalisation, dB with an 80 dB
floor below each clip's peak, orthonormal DCT-II. Output is time-major because that is what the
models consume.

Shape legend: B batch, N samples, K frequency bins (n_fft // 2 + 1), T frames, M mel bands,
C cepstral coefficients (n_mfcc). A 1-D waveform goes through the same code without B.
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Callable, Iterator, Sequence

import librosa
import numpy as np
import scipy.fft
import soxr
import torch
from torch import nn
from tqdm.auto import tqdm

from audiotext.config import LOWEST_CLIP_RATE, AudioConfig
from audiotext.errors import DataError


# Float samples are expected in [-1, 1]; a peak far above means integer values stored as floats,
# which would give features of another scale without any error.
FLOAT_PEAK_LIMIT = 2.0


def check_float_samples(samples: np.ndarray) -> None:
    """Refuses float samples that are not audio in [-1, 1]: NaN or infinite, or far louder."""
    if not np.isfinite(samples).all():
        raise DataError("the samples hold NaN or infinite values")
    peak = float(np.abs(samples).max(initial=0.0))
    if peak > FLOAT_PEAK_LIMIT:
        raise DataError(f"float samples must lie in [-1, 1], these peak at {peak:g} "
                        "(integer sample values stored as floats? divide by 32768)")  # fmt: skip


def check_samples(samples: np.ndarray) -> None:
    """Refuses samples that are not audio at the scale of their dtype: float ones outside [-1, 1]
    (`check_float_samples`), integers that are not signed, and int32 or int64 samples that all fit
    in int16: int16 values stored wider (`np.asarray` of a list gives int64), which scaled by the
    wider range would be near silence without any error."""
    if np.issubdtype(samples.dtype, np.floating):
        check_float_samples(samples)
        return
    if not np.issubdtype(samples.dtype, np.signedinteger):
        raise DataError(f"samples must be signed integers or floats, got dtype {samples.dtype}")
    if samples.dtype.itemsize > 2 and samples.size:
        low, high = int(samples.min()), int(samples.max())  # Python ints: -(-2**31) overflows int32
        if np.iinfo(np.int16).min <= low and high <= np.iinfo(np.int16).max:
            raise DataError(f"{samples.dtype} samples must use {samples.dtype}'s range, these peak at {max(-low, high)} "
                            f"(int16 sample values stored as {samples.dtype}? convert with .astype(np.int16))")  # fmt: skip


def float_samples(samples: np.ndarray) -> np.ndarray:
    """Samples as floats in [-1, 1], once `check_samples` has passed them: integers scaled by their
    dtype's range (int16 -32768 -> -1.0; int16 gives float32), floats as they are. Every path from
    samples to features or to the recogniser converts here."""
    samples = np.asarray(samples)
    check_samples(samples)
    if np.issubdtype(samples.dtype, np.signedinteger):
        return samples / np.float32(-np.iinfo(samples.dtype).min)
    return samples


def int16_samples(samples: np.ndarray) -> np.ndarray:
    """int16 unchanged; anything else through `float_samples`, scaled to full scale and clipped."""
    samples = np.asarray(samples)
    if samples.dtype == np.int16:
        return samples
    return np.clip(np.round(float_samples(samples).astype(np.float64) * 32767), -32768, 32767).astype(np.int16)


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """float32 copy of a mono clip at `target_sr`; integer samples are scaled to [-1, 1]."""
    if orig_sr <= 0 or target_sr <= 0:
        raise DataError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    return resample_keeping_dtype(float_samples(audio).astype(np.float32, copy=False), orig_sr, target_sr)


def resample_keeping_dtype(clip: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """soxr's high-quality resampling in the clip's own dtype (int16 in, int16 out): how the clips
    of a corpus are read at its rate, before their features. A dtype soxr does not take (int8,
    int64, float16) is resampled as float32 samples in [-1, 1]."""
    if rate < LOWEST_CLIP_RATE:
        raise DataError(f"a sample rate of {rate} Hz holds no speech: clips are at least {LOWEST_CLIP_RATE} Hz "
                        "(a rate given in kHz?)")  # fmt: skip
    if rate == target_rate:
        return clip
    if clip.dtype not in (np.int16, np.int32, np.float32, np.float64):
        return resample(clip, rate, target_rate)
    return soxr.resample(clip, rate, target_rate, quality="HQ")


def trim_zeros(audio: np.ndarray) -> np.ndarray:
    """Strips the runs of exact-zero samples at both ends; zeros inside the clip are speech."""
    # argmax of a boolean array stops at the first True: 0.04 ms for a 3-second clip at 48 kHz,
    # against 0.24 ms for listing every nonzero sample.
    nonzero = audio != 0
    first = int(nonzero.argmax()) if nonzero.size else 0
    if not nonzero.size or not nonzero[first]:
        return audio[:0]
    return audio[first : len(audio) - int(nonzero[::-1].argmax())]


def samples_digest(samples: np.ndarray) -> bytes:
    """What a clip is made of: a digest of its samples without the zeros at its ends, which the
    features trim too (a copy padded with silence is the same clip)."""
    return hashlib.blake2b(np.ascontiguousarray(trim_zeros(samples)).tobytes(), digest_size=16).digest()


class MFCC(nn.Module):
    """MFCCs of float waveforms (B, N) or (N,) -> (B, T, n_mfcc) or (T, n_mfcc), T = 1 + N // hop.

    The top_db floor is taken per clip (each item's own peak), so a clip's features never depend on
    the batch it is computed in.
    """

    def __init__(
        self,
        sample_rate: int,
        n_mfcc: int = 40,
        n_fft: int = 400,
        hop_length: int | None = None,
        n_mels: int = 128,
        top_db: float = 80.0,
    ) -> None:
        super().__init__()
        hop_length = n_fft // 2 if hop_length is None else hop_length
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if n_fft <= 0:
            raise ValueError(f"n_fft must be positive, got {n_fft}")
        if hop_length <= 0:
            raise ValueError(f"hop_length must be positive, got {hop_length} (n_fft // 2 when not given)")
        if n_mels <= 0:
            raise ValueError(f"n_mels must be positive, got {n_mels}")
        if not 0 < n_mfcc <= n_mels:
            raise ValueError(f"n_mfcc must be in 1..n_mels ({n_mels}), got {n_mfcc}")
        if top_db <= 0:
            raise ValueError(f"top_db must be positive, got {top_db}")
        self.sample_rate, self.n_mfcc, self.n_fft = sample_rate, n_mfcc, n_fft
        self.hop_length, self.n_mels, self.top_db = hop_length, n_mels, top_db

        with warnings.catch_warnings():
            # At 16 kHz the reference's 128 bands over 201 bins leave four low bands without a bin
            # (torchaudio warns too); they sit at the dB floor and are kept for compatibility.
            warnings.filterwarnings("ignore", message="Empty filters detected")
            fbank = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, htk=True, norm=None)
        dct = scipy.fft.dct(np.eye(n_mels), type=2, norm="ortho", axis=0)[:n_mfcc]  # (C, M)
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True))
        self.register_buffer("fbank", torch.from_numpy(fbank.T).float())  # (K, M)
        self.register_buffer("dct", torch.from_numpy(dct.T).float())  # (M, C)

    @classmethod
    def of(cls, cfg: AudioConfig) -> "MFCC":
        """The MFCC module of an audio configuration's settings."""
        return cls(cfg.resample_rate, n_mfcc=cfg.n_mfcc, n_fft=cfg.n_fft_size, n_mels=cfg.n_mels)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() not in (1, 2):
            raise ValueError(f"expected a waveform of shape (N,) or (B, N), got {tuple(waveform.shape)}")
        # Reflect padding needs more than n_fft // 2 samples; one full window is the useful minimum.
        if waveform.shape[-1] < self.n_fft:
            raise ValueError(f"waveform has {waveform.shape[-1]} samples, needs at least n_fft={self.n_fft}")
        spec = torch.stft(
            waveform,
            self.n_fft,
            hop_length=self.hop_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )  # (B, K, T)
        power = spec.abs().pow(2).transpose(-1, -2)  # (B, T, K)
        mel = power @ self.fbank  # (B, T, M)
        db = 10.0 * torch.log10(mel.clamp(min=1e-10))
        peak = db.amax(dim=(-2, -1), keepdim=True)  # (B, 1, 1): each clip's own peak
        db = torch.maximum(db, peak - self.top_db)
        return db @ self.dct  # (B, T, C)


PROSODY_WIDTH = 6  # log F0, voicing, log energy, and the delta of each
F0_RANGE = (60.0, 500.0)  # Hz: adult speech, low male to high female voices
VOICING_THRESHOLD = 0.5  # normalised autocorrelation at the best lag above which a frame is voiced


def audio_width(cfg: AudioConfig) -> int:
    """Values per frame of `clip_features` (F in the shape legends)."""
    return cfg.n_mfcc + (PROSODY_WIDTH if cfg.features == "mfcc+prosody" else 0)


def pitch_frames(wave: np.ndarray, sample_rate: int, hop_length: int) -> np.ndarray:
    """Contiguous (T, W) frames of `wave` centred like the MFCC frames (T = 1 + N // hop_length),
    zeros beyond its ends: what librosa.yin frames when centred on the wave padded with W zeros."""
    # A frame must hold two periods of the lowest F0: at least 2 * sample_rate / low samples.
    width = 1 << int(np.ceil(np.log2(max(2 * sample_rate / F0_RANGE[0], hop_length + 1))))
    centred = np.pad(wave, (width // 2, width // 2 + width))
    frames = librosa.util.frame(centred, frame_length=width, hop_length=hop_length)  # (W, at least T)
    return np.ascontiguousarray(frames[:, : 1 + len(wave) // hop_length].T)


def yin(frames: np.ndarray, sample_rate: int, low: float, high: float, trough_threshold: float = 0.1) -> np.ndarray:
    """(T,) F0 in Hz of contiguous frames (T, W): librosa.yin's estimate to the bit, at 1.6 times
    its speed.

    librosa works along the columns of its framed signal (W, T); the same transforms along rows
    are cheaper, and every other step is librosa's, in its order and dtypes, so the result is equal
    to the bit (on every frame of the demo corpus, and in the tests) for `pitch_frames`.
    """
    width = frames.shape[1]
    min_period = int(np.floor(sample_rate / high))
    max_period = min(int(np.ceil(sample_rate / low)), width - 1)
    size = scipy.fft.next_fast_len(2 * width - 1, real=True)
    spectrum = scipy.fft.rfft(frames, n=size)
    autocorrelation = scipy.fft.irfft(spectrum.real**2 + spectrum.imag**2, n=size)[:, : max_period + 1]  # (T, P + 1)
    energy = np.cumsum(frames[:, :max_period] ** 2, axis=1)  # (T, P): energy[:, k - 1] = sum of y[0..k-1]^2
    energy[:, 0] = 0  # librosa leaves y[0]^2 out of the difference at lag 1
    difference = 2 * (autocorrelation[:, :1] - autocorrelation[:, 1:]) - energy  # (T, P): lags 1..P
    cumulative_mean = np.cumsum(difference, axis=1) / np.arange(1, max_period + 1)
    normalised = difference[:, min_period - 1 :] / (cumulative_mean[:, min_period - 1 :] + np.finfo(np.float64).tiny)
    trough = np.empty(normalised.shape, dtype=bool)  # (T, L): lags min_period..P
    trough[:, 1:-1] = (normalised[:, 1:-1] < normalised[:, :-2]) & (normalised[:, 1:-1] <= normalised[:, 2:])
    trough[:, 0] = normalised[:, 0] < normalised[:, 1]
    trough[:, -1] = normalised[:, -1] < normalised[:, -2]
    trough &= normalised < trough_threshold
    # The first trough below the threshold, else the global minimum; then a parabola through it and
    # its neighbours, unless it lies on an edge or its vertex is more than a lag away.
    period = np.where(trough.any(axis=1), trough.argmax(axis=1), normalised.argmin(axis=1))
    rows = np.arange(len(normalised))
    inner = np.clip(period, 1, normalised.shape[1] - 2)
    before, at, after = normalised[rows, inner - 1], normalised[rows, inner], normalised[rows, inner + 1]
    curvature, slope = after + before - 2 * at, (after - before) / 2
    interpolated = (period == inner) & (np.abs(slope) < np.abs(curvature))
    shift = np.where(interpolated, -slope / np.where(interpolated, curvature, 1.0), 0.0)
    return sample_rate / (min_period + period + shift)


def prosody(wave: np.ndarray, sample_rate: int, hop_length: int) -> np.ndarray:
    """(T, 6) float32 per MFCC frame (T = 1 + N // hop_length, frames centred like the MFCCs): log F0,
    voicing, log RMS energy, and the delta of each.

    F0 comes from YIN (`yin`, librosa.yin's estimate; pYIN's voicing probabilities cost about a
    thousand times more, 1.7 s per 2.6 s clip here). YIN returns an estimate for every frame, noise included, so voicing
    is measured apart: the highest normalised autocorrelation at a lag inside F0_RANGE (near 1 for a
    periodic frame, low for noise). Frames below VOICING_THRESHOLD get the log F0 interpolated from
    their voiced neighbours, so the contour has no jumps where YIN found no period.
    """
    low, high = F0_RANGE
    frames = pitch_frames(wave, sample_rate, hop_length)  # (T, W)
    n_frames, frame_length = frames.shape
    f0 = yin(frames, sample_rate, low, high)
    frames = frames - frames.mean(axis=1, keepdims=True)
    # Zero padding to W + the longest lag is the least that keeps the circular autocorrelation
    # exact at every lag read; scipy's FFT along contiguous rows is 3x numpy's over columns of 2W.
    longest_lag = int(np.ceil(sample_rate / low))
    size = scipy.fft.next_fast_len(frame_length + longest_lag, real=True)
    autocorrelation = scipy.fft.irfft(np.abs(scipy.fft.rfft(frames, n=size)) ** 2, n=size)  # (T, size), lag 0 first
    lags = slice(int(sample_rate / high), longest_lag + 1)
    voicing = np.clip(autocorrelation[:, lags].max(axis=1) / np.maximum(autocorrelation[:, 0], 1e-10), 0.0, 1.0)
    voiced = voicing > VOICING_THRESHOLD
    steps = np.arange(n_frames)
    log_f0 = np.interp(steps, steps[voiced], np.log(f0[voiced])) if voiced.any() else np.full(n_frames, np.log(low))
    log_energy = 0.5 * np.log(np.mean(frames**2, axis=1) + 1e-10)
    contours = np.stack([log_f0, voicing, log_energy])  # (3, T)
    deltas = librosa.feature.delta(contours, width=3, mode="nearest") if n_frames >= 3 else np.zeros_like(contours)
    return np.concatenate([contours, deltas]).T.astype(np.float32)


def clip_features(audio: np.ndarray, cfg: AudioConfig, mfcc: MFCC | None = None) -> np.ndarray:
    """Raw clip at cfg.sample_rate -> float32 (T, F) MFCCs, and the `prosody` of each frame beside
    them with cfg.features "mfcc+prosody"; T <= cfg.max_len_for_audio.

    Zeros are trimmed before resampling: exact zeros are padding only in the raw stream, while the
    resampler's filter would smear the clip's first and last samples into them.
    """
    if mfcc is None:
        mfcc = MFCC.of(cfg)
    settings = (mfcc.sample_rate, mfcc.n_fft, mfcc.n_mels, mfcc.n_mfcc)
    if settings != (cfg.resample_rate, cfg.n_fft_size, cfg.n_mels, cfg.n_mfcc):
        raise ValueError(f"MFCC (sample_rate, n_fft, n_mels, n_mfcc) = {settings} disagrees with {cfg}")
    wave = resample(trim_zeros(audio), cfg.sample_rate, cfg.resample_rate)
    if len(wave) < mfcc.n_fft:
        raise DataError(
            f"clip has {len(wave)} samples at {cfg.resample_rate} Hz once its edge zeros are trimmed, "
            f"needs at least one window of {mfcc.n_fft}"
        )
    with torch.inference_mode():
        feats = mfcc(torch.from_numpy(wave).to(mfcc.window.device)).cpu().numpy()  # (T, C)
    if audio_width(cfg) > cfg.n_mfcc:
        feats = np.concatenate([feats, prosody(wave, cfg.resample_rate, mfcc.hop_length)], axis=1)  # (T, C + 6)
    return feats[: cfg.max_len_for_audio]


def iter_audio_features(
    clips: Sequence[np.ndarray],
    cfg: AudioConfig,
    progress: bool = True,
    desc: str = "MFCC",
    where: Callable[[int], str] = "row {}".format,
) -> Iterator[np.ndarray]:
    """MFCCs (T_i, n_mfcc) of every clip in turn, with one MFCC module shared by all of them.

    A clip that has no features (too short, or not audio) raises DataError naming it as `where(i)`."""
    mfcc = MFCC.of(cfg)
    for i, clip in enumerate(tqdm(clips, desc=desc, disable=not progress, leave=False)):
        try:
            yield clip_features(clip, cfg, mfcc)
        except ValueError as err:
            raise DataError(f"{where(i)}: {err}") from None
