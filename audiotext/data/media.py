"""Audio from media files through PyAV (FFmpeg): wav, flac, mp3, ogg, m4a, and the audio track of
mp4/mkv/m2ts videos.

`load_audio` decodes one file (or one segment of it; WAV files through libsndfile, which opens them
200 times faster), downmixes to mono and keeps the native rate: int16 when the codec decodes to
16-bit integers (PCM, 16-bit FLAC), so lossless sources come back sample for sample, float32 in
[-1, 1] otherwise (lossy codecs decode to float). `write_media` is the inverse, used to build test
fixtures and benchmark corpora.

A truncated file raises `MediaError`: compressed ones cut mid-packet fail to decode, and a WAV,
FLAC or MP3 whose header states its length (RIFF size, STREAMINFO sample count, Xing/Info/VBRI
frame count) is held to it, as FFmpeg and libsndfile would read the part that is there as a shorter
clip. Formats without such a header (an MPEG-TS cut at a packet boundary, an MP3 without a Xing
header) still read as shorter clips: their length is only known from the file's size.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from audiotext.errors import DataError

# Decoded sample formats that are 16-bit (or narrower) integers: these stay int16.
_INTEGER_FORMATS = {"s16", "s16p", "u8", "u8p"}
_INTEGER_SUBTYPES = {"PCM_16", "PCM_S8", "PCM_U8"}  # the same, as libsndfile names WAV encodings
_WAV_FORMATS = {"WAV", "WAVEX"}
# A limited read (`at_most`) serves uploads: a few kilobytes of FLAC silence can hold half a minute
# at 655 kHz on 8 channels, gigabytes once decoded. Channels are mixed down as they are decoded, and
# this rate (above any recording of speech) bounds what such a read returns.
LIMITED_READ_MAX_RATE = 384_000


class MediaError(DataError):
    """A file that yields no usable audio; the message names the file and the reason."""


def load_audio(
    path: str | Path, start: float | None = None, end: float | None = None, at_most: float | None = None
) -> tuple[np.ndarray, int]:
    """The first audio track of `path` between `start` and `end` seconds: (mono samples, rate).

    A segment `end` past the end of the file is an error (the segment is not there); `at_most`
    instead reads no more than that many seconds, however long the file, at no more than
    LIMITED_READ_MAX_RATE. Samples are int16 for 16-bit integer codecs and float32 otherwise.
    Multi-channel audio is the mean of its channels (as `ffmpeg -ac 1`, without the clipping a sum
    could cause).
    """
    path = Path(path)
    if start is not None and end is not None and end <= start:
        raise MediaError(f"{path}: segment end {end} s is not after its start {start} s")
    whole_segment = at_most is None
    if at_most is not None:
        end = (start or 0.0) + at_most if end is None else min(end, (start or 0.0) + at_most)
    wav = _read_wav(path, start, end, whole_segment)
    if wav is not None:
        samples, rate = wav
        if len(samples) == 0:
            raise MediaError(f"{path}: no audio decoded{_segment_words(start, end)}")
        return samples, rate
    try:
        # FFmpeg reads a name that starts with a protocol as a URL (`pipe:0.flac` read standard input,
        # `concat:a|b` two files): an absolute path is always a file's.
        container = av.open(str(path.absolute()))
    except (FileNotFoundError, IsADirectoryError, PermissionError) as err:
        raise MediaError(f"{path}: unreadable path ({err.strerror or type(err).__name__})") from None
    except av.FFmpegError as err:
        raise MediaError(f"{path}: not a readable media file ({err.strerror or err})") from None
    with container:
        if not container.streams.audio:
            raise MediaError(f"{path}: no audio track")
        stream = container.streams.audio[0]
        promised = None
        if stream.duration is not None and _header_states_length(path, container.format.name):
            promised = float(stream.duration * stream.time_base)
        try:
            chunks, rate = _decode(container, stream, start, end, whole_segment, promised)
        except av.FFmpegError as err:
            raise MediaError(f"{path}: corrupt audio ({err.strerror or err})") from None
        except MediaError as err:
            raise MediaError(f"{path}: {err}") from None
        if not chunks:
            raise MediaError(f"{path}: no audio decoded{_segment_words(start, end)}")
    return np.concatenate(chunks), rate


def _segment_words(start: float | None, end: float | None) -> str:
    """Where a segment lies, as an error message says it (nothing for the whole file)."""
    if end is None:
        return f" from {start} s to the end" if start else ""
    return f" between {start or 0} and {end} s"


def _read_wav(path: Path, start: float | None, end: float | None, whole_segment: bool) -> tuple[np.ndarray, int] | None:
    """Mono samples and the rate of a WAV file through libsndfile; None for anything else.

    libsndfile reads a 3-second WAV in 0.07 ms, FFmpeg in 14 ms (most of it probing the format):
    that was half of a clip's prediction time. Samples and cuts are the same as `_decode`'s.
    """
    # As bytes: soundfile encodes a str name strictly, and a name that is not UTF-8 would fail.
    name = os.fsencode(path)
    try:
        info = sf.info(name)
    except (sf.LibsndfileError, RuntimeError, OSError):
        return None  # not a file libsndfile knows: PyAV tries, and names the problem
    if info.format not in _WAV_FORMATS:
        return None
    _require_whole_riff(path)
    if not whole_segment:
        _require_limited_rate(info.samplerate, where=f"{path}: ")
    first = round(start * info.samplerate) if start else 0
    last = round(end * info.samplerate) if end is not None else None
    if whole_segment and last is not None and last > info.frames:
        raise MediaError(f"{path}: segment end {end} s is past the end of the file ({info.frames / info.samplerate:.3f} s)")
    dtype = "int16" if info.subtype in _INTEGER_SUBTYPES else "float32"
    samples, rate = sf.read(name, start=first, stop=last, dtype=dtype, always_2d=True)  # (n, channels)
    return _mono(samples.T), rate


def _require_whole_riff(path: Path) -> None:
    """A WAV file whose RIFF header promises more bytes than the file holds was cut short (a copy
    or download that stopped): libsndfile would read the part that is there as a shorter clip."""
    with open(path, "rb") as f:
        header = f.read(8)
    promised = int.from_bytes(header[4:8], "little") + 8
    size = path.stat().st_size
    # 0 and 0xFFFFFFFF stand for "unknown length" in files written while recording; RF64 is not RIFF.
    if header[:4] == b"RIFF" and promised not in (8, 0xFFFFFFFF + 8) and promised > size:
        raise MediaError(f"{path}: truncated: its header promises {promised} bytes, the file holds {size}")


def _require_limited_rate(rate: int, where: str = "") -> None:
    if rate > LIMITED_READ_MAX_RATE:
        raise MediaError(f"{where}sample rate {rate} Hz is above the {LIMITED_READ_MAX_RATE} Hz a limited read accepts")


def _header_states_length(path: Path, format_name: str) -> bool:
    """Whether the header of a FLAC or MP3 file counts its samples or frames. Only then is FFmpeg's
    stream duration a promise: otherwise it is estimated from the size, which a cut file matches."""
    with open(path, "rb") as f:
        head = f.read(64)
        if format_name == "flac":
            # "fLaC", a block header, then STREAMINFO; its bytes 13-17 end in the 36-bit sample
            # count, 0 when the encoder did not know it.
            info = head[8:42]
            return head[:4] == b"fLaC" and len(info) == 34 and ((info[13] & 0x0F) << 32 | int.from_bytes(info[14:18], "big")) > 0
        if format_name != "mp3":
            return False
        if head[:3] == b"ID3":  # an ID3v2 tag first: its size is four 7-bit bytes after 10 header bytes
            f.seek(10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(head[6:10])))
        else:
            f.seek(0)
        first_frame = f.read(192)  # the tags sit after the side information of the first frame
    for tag in (b"Xing", b"Info"):
        at = first_frame.find(tag)
        if at >= 0:
            return bool(int.from_bytes(first_frame[at + 4 : at + 8], "big") & 1)  # flag 1: frame count present
    return b"VBRI" in first_frame  # Fraunhofer's header always counts frames


def _decode(
    container: av.container.InputContainer, stream: av.AudioStream, start: float | None, end: float | None,
    whole_segment: bool, promised: float | None = None,
) -> tuple[list[np.ndarray], int]:
    """Mono chunks covering [start, end), cut at sample precision. A stream that
    ends (before `end`, or with no `end`) short of the `promised` seconds its header states is an
    error, truncated, even where `end` is only a limit (`at_most`); with `whole_segment`, so is a
    stream that ends before `end`."""
    integer = stream.codec_context.format is not None and stream.codec_context.format.name in _INTEGER_FORMATS
    resampler = None  # built on the first frame, whose layout and rate it keeps: only the format changes
    # Timestamps count from the stream's start time, not zero (an MPEG-TS starts at about 1.4 s).
    origin = stream.start_time or 0
    if start:
        # Seeks to a point at or before `start`; the frames' timestamps place the exact cut below.
        container.seek(origin + int(start / stream.time_base), stream=stream)
    chunks, rate, position, last = [], 0, None, None
    for frame in container.decode(stream):
        if resampler is None:
            rate = frame.sample_rate
            if not whole_segment:
                _require_limited_rate(rate)
            resampler = av.AudioResampler(format="s16p" if integer else "fltp", layout=frame.layout, rate=rate)
            first = round(start * rate) if start else 0
            last = round(end * rate) if end is not None else None
        if frame.pts is not None:
            position = round((frame.pts - origin) * frame.time_base * rate)
        elif position is None:
            position = 0
        for converted in resampler.resample(frame):
            chunk = converted.to_ndarray()  # (channels, n)
            lo, hi = max(first - position, 0), chunk.shape[1] if last is None else min(last - position, chunk.shape[1])
            if hi > lo:
                chunks.append(_mono(chunk[:, lo:hi]))
            position += chunk.shape[1]
        if last is not None and position >= last:
            break
    # Containers round their timestamps: a stream may end up to 10 ms before what they state.
    read_to_the_end = position is not None and (last is None or position < last)
    if read_to_the_end and promised is not None and position < round(promised * rate) - rate // 100:
        raise MediaError(f"truncated: its header promises {promised:.3f} s, the file holds {position / rate:.3f} s")
    if whole_segment and end is not None and chunks and position < round(end * rate) - rate // 100:
        raise MediaError(f"segment end {end} s is past the end of the file ({position / rate:.3f} s)")
    return chunks, rate


def _mono(samples: np.ndarray) -> np.ndarray:
    """(channels, n) → (n,): int16 stays int16 (rounded mean), anything else becomes float32."""
    if samples.dtype == np.int16:
        if samples.shape[0] == 1:
            return np.ascontiguousarray(samples[0])
        return np.round(samples.mean(axis=0)).astype(np.int16)
    return samples.mean(axis=0, dtype=np.float64).astype(np.float32)


def write_media(
    path: str | Path,
    samples: np.ndarray,
    sample_rate: int,
    codec: str,
    container_format: str | None = None,
    channels: int = 1,
    video: bool = False,
    audio: bool = True,
) -> None:
    """Encodes int16 mono `samples` into `path` (repeated over `channels`); `video` adds a tiny black
    video stream at 1 fps, as a camera file has. `container_format` defaults to the suffix's;
    `m2ts` writes an MPEG-TS in Blu-ray (192-byte packet) mode.
    """
    path = Path(path)
    options = {}
    if container_format is None and path.suffix == ".m2ts":
        container_format, options = "mpegts", {"mpegts_m2ts_mode": "1"}
    with av.open(str(path), "w", format=container_format, options=options) as container:
        if video:
            picture = container.add_stream("mpeg2video", rate=1)
            picture.width, picture.height, picture.pix_fmt = 16, 16, "yuv420p"
        if audio:
            sound = container.add_stream(codec, rate=sample_rate, layout="mono" if channels == 1 else "stereo")
            frame_size = sound.codec_context.frame_size or 1024
            planar = np.repeat(samples.astype(np.int16)[None, :], channels, axis=0)
            for offset in range(0, planar.shape[1], frame_size):
                # Every encoder takes s16p: the resampler inside `encode` converts to what it needs.
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(planar[:, offset : offset + frame_size]), format="s16p",
                    layout=sound.layout,
                )  # fmt: skip
                frame.sample_rate, frame.pts, frame.time_base = sample_rate, offset, Fraction(1, sample_rate)
                container.mux(sound.encode(frame))
            container.mux(sound.encode(None))
        if video:
            seconds = max(1, int(np.ceil(len(samples) / sample_rate)))
            black = np.zeros((16, 16, 3), np.uint8)
            for second in range(seconds):
                frame = av.VideoFrame.from_ndarray(black, format="rgb24")
                frame.pts = second
                container.mux(picture.encode(frame))
            container.mux(picture.encode(None))
