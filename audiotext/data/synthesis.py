"""The built-in demo corpus: Korean scripts read by espeak-ng voices with emotional prosody.

`build_demo_corpus` writes `train.pkl`, `dev.pkl`, `test.pkl`, `test_stt.pkl` and `dev_stt.pkl` in the
reference's pickle format (see `audiotext.data.corpus`), plus `corpus.json` describing them;
`build_demo_corpora` synthesises the clips once and writes them split several ways (by clip, by script).

- Scripts: `demo_scripts.tsv` beside this file, 50 per emotion numbered as the reference's script
  file (1-50 행복, 51-100 놀람, 101-150 중립, 151-200 공포, 201-250 혐오, 251-300 분노, 301-350 슬픔).
  In each emotion the first 33 say how the speaker feels ("와 정말 신난다 오늘 최고의 날이야!");
  the last 17 are worded neutrally ("시험 결과가 방금 나왔어요."), so the text alone cannot always
  tell the emotion.
- Speakers: espeak-ng's Korean voice with one variant per speaker (`ko+f1`, `ko+m1`, ...).
  Every speaker reads every script once; three speakers give 1050 clips.
- Emotion is in the prosody: per-emotion pitch, pitch range, rate, loudness and word gap,
  jittered per clip so that emotions overlap and the audio alone cannot always tell either.
- Recording: background noise at a random SNR inside the speech, runs of exact zeros at both
  ends (as the reference's clips have), 48 kHz mono int16.
- `test_stt.pkl` replaces each test sentence with a simulated speech-recognizer transcript;
  `dev_stt.pkl` does the same for dev, so that what recogniser errors cost can be weighed on dev
  (choosing on `test_stt` would be choosing on test).

Every random draw comes from a generator seeded by (seed, speaker, script_id), or by the seed
alone for the split, so a seed gives byte-identical pickles whatever the number of worker processes.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import multiprocessing
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Mapping
from xml.sax.saxutils import escape

import numpy as np
import pandas as pd
import soundfile as sf
import soxr
from tqdm import tqdm

from audiotext.config import REFERENCE_LABELS, AudioConfig
from audiotext.data.corpus import write_reference_pickle
from audiotext.data.splits import SPLITS, assign_splits, check_leakage
from audiotext.data.transcripts import hangul_vocabulary, recogniser_transcript
from audiotext.features.audio import int16_samples
from audiotext.io import write_json

SAMPLE_RATE = AudioConfig().sample_rate
SPLIT_BY = ("clip", "script")
# Three voices reading the 350 scripts: 1050 clips, about the size of a 2-core demo run.
DEFAULT_SPEAKERS = 3
SPLIT_RATIOS = (0.8, 0.1, 0.1)  # of each emotion's clips or scripts, as the reference
# The demo's partitions in the terms of `assign_splits`: a script is one sentence.
_SPLIT_UNIT = {"clip": "clip", "script": "sentence"}

# espeak-ng voice variants, one per speaker, female and male alternating so that any prefix is mixed.
SPEAKER_VARIANTS: tuple[str, ...] = (
    "f1", "m1", "f2", "m2", "f3", "m3", "f4", "m4", "f5", "m6", "linda", "m7", "steph", "m8", "belinda", "m5",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Prosody:
    pitch: float  # espeak-ng -p, 0..99
    pitch_range: float  # SSML <prosody range>, percent of the voice's own range
    rate: float  # espeak-ng -s, words per minute
    amplitude: float  # espeak-ng -a, 0..200
    word_gap: float  # espeak-ng -g, pause between words in units of 10 ms


# The acted-emotion stereotypes: anger loud and fast, sadness slow, low, flat and quiet, fear high,
# fast-ish, narrow and quiet, surprise high and wide, happiness higher and faster, disgust low and slow.
EMOTION_PROSODY: dict[str, Prosody] = {
    "공포": Prosody(pitch=68, pitch_range=70, rate=190, amplitude=70, word_gap=1),
    "놀람": Prosody(pitch=75, pitch_range=170, rate=175, amplitude=110, word_gap=0),
    "분노": Prosody(pitch=55, pitch_range=140, rate=210, amplitude=140, word_gap=0),
    "슬픔": Prosody(pitch=30, pitch_range=50, rate=130, amplitude=65, word_gap=3),
    "중립": Prosody(pitch=48, pitch_range=100, rate=170, amplitude=95, word_gap=0),
    "행복": Prosody(pitch=65, pitch_range=150, rate=195, amplitude=115, word_gap=0),
    "혐오": Prosody(pitch=35, pitch_range=80, rate=145, amplitude=90, word_gap=2),
}
# Standard deviations of the per-clip jitter: wide enough that neighbouring emotions overlap.
PROSODY_JITTER = Prosody(pitch=8.5, pitch_range=25, rate=15, amplitude=17, word_gap=0.85)
PROSODY_LIMITS = Prosody(pitch=99, pitch_range=250, rate=400, amplitude=200, word_gap=10)

SNR_DB = (15.0, 30.0)  # background noise level, uniform per clip
ZERO_RUN_S = (0.05, 0.4)  # exact silence before and after the speech, uniform per end
HEADROOM = 0.5  # espeak-ng peaks near full scale; keep room for the noise before int16
SPEECH_THRESHOLD = 1e-3  # below this espeak-ng's leading and trailing samples are silence


def load_demo_scripts() -> pd.DataFrame:
    """The packaged scripts: columns script_id (int), emotion, sentence; one row per script."""
    text = resources.files("audiotext.data").joinpath("demo_scripts.tsv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
    scripts = pd.DataFrame(
        {
            "script_id": [int(row["script_id"]) for row in rows],
            "emotion": pd.Series([row["emotion"] for row in rows], dtype=object),
            "sentence": pd.Series([row["sentence"] for row in rows], dtype=object),
        }
    )
    unknown = set(scripts["emotion"]) - set(REFERENCE_LABELS)
    if unknown or scripts["script_id"].duplicated().any() or scripts["sentence"].duplicated().any():
        raise ValueError(f"demo_scripts.tsv: unknown emotions {sorted(unknown)} or duplicate ids/sentences")
    return scripts


@dataclasses.dataclass(frozen=True)
class ClipJob:
    """Everything one worker needs to synthesise one clip."""

    seed: int
    speaker: int
    variant: str
    script_id: int
    sentence: str
    emotion: str


def _espeak_executable() -> str:
    executable = shutil.which("espeak-ng")
    if executable is None:
        raise RuntimeError(
            "espeak-ng is not installed; the demo corpus is synthesised with it. "
            "Install it with `sudo apt-get install espeak-ng` (Debian/Ubuntu) or run `make setup`."
        )
    return executable


def _espeak_version(executable: str) -> str:
    banner = subprocess.run([executable, "--version"], capture_output=True, text=True, check=True).stdout
    return banner.split("Data at:")[0].strip()


def _jittered_prosody(emotion: str, rng: np.random.Generator) -> Prosody:
    base = dataclasses.astuple(EMOTION_PROSODY[emotion])
    jitter = dataclasses.astuple(PROSODY_JITTER)
    limits = dataclasses.astuple(PROSODY_LIMITS)
    drawn = np.clip(np.add(base, np.multiply(jitter, rng.standard_normal(len(base)))), 0, limits)
    return Prosody(*drawn.tolist())


def _speak(job: ClipJob, prosody: Prosody) -> tuple[np.ndarray, int]:
    """espeak-ng's float waveform and its sample rate (22050 Hz for its own voices)."""
    ssml = f'<speak><prosody range="{prosody.pitch_range:.0f}%">{escape(job.sentence)}</prosody></speak>'
    command = [
        _espeak_executable(), "-m", "--stdout", "-v", f"ko+{job.variant}",
        "-p", f"{prosody.pitch:.0f}", "-s", f"{prosody.rate:.0f}",
        "-a", f"{prosody.amplitude:.0f}", "-g", f"{prosody.word_gap:.0f}", ssml,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True)
    if result.returncode != 0 or len(result.stdout) <= 44:
        raise RuntimeError(
            f"espeak-ng failed on script {job.script_id} with voice ko+{job.variant}: "
            f"{result.stderr.decode(errors='replace').strip()}"
        )
    wave, rate = sf.read(io.BytesIO(result.stdout), dtype="float32")
    return wave, rate


def _background_noise(n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise, its spectral tilt random from white (0) past pink (1), halfway to brown (2)."""
    fft_size = 1 << (n_samples - 1).bit_length()  # a power of two: odd clip lengths make the FFT slow
    spectrum = np.fft.rfft(rng.standard_normal(fft_size))
    frequencies = np.fft.rfftfreq(fft_size)
    tilt = rng.uniform(0.0, 1.5)
    spectrum[1:] /= frequencies[1:] ** (tilt / 2)
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, fft_size)[:n_samples]
    return noise / np.sqrt(np.mean(noise**2))


def _synthesise_clip(job: ClipJob) -> np.ndarray:
    """One clip: speech with jittered prosody, noise, exact-zero runs at both ends; int16 at 48 kHz."""
    rng = np.random.default_rng([job.seed, job.speaker, job.script_id])
    wave, rate = _speak(job, _jittered_prosody(job.emotion, rng))
    voiced = np.flatnonzero(np.abs(wave) > SPEECH_THRESHOLD)
    speech = soxr.resample(wave[voiced[0] : voiced[-1] + 1], rate, SAMPLE_RATE).astype(np.float64) * HEADROOM

    snr_db = rng.uniform(*SNR_DB)
    noise_scale = np.sqrt(np.mean(speech**2) / 10 ** (snr_db / 10))
    speech += noise_scale * _background_noise(len(speech), rng)

    lead, trail = (int(rng.uniform(*ZERO_RUN_S) * SAMPLE_RATE) for _ in range(2))
    samples = int16_samples(speech)
    return np.concatenate([np.zeros(lead, np.int16), samples, np.zeros(trail, np.int16)])


STT_SPLITS = ("test", "dev")  # the splits also written with simulated recogniser transcripts
STT_STREAM = 1  # appended to (seed, speaker, script_id) to seed the transcript draws


def _synthesise_all(jobs: list[ClipJob], workers: int, progress: bool) -> list[np.ndarray]:
    with contextlib.ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(multiprocessing.Pool(workers))
            clips = pool.imap(_synthesise_clip, jobs, chunksize=8)
        else:
            clips = map(_synthesise_clip, jobs)
        clips = tqdm(clips, total=len(jobs), desc="demo corpus", unit="clip", disable=not progress)
        # A clip unpickled from a worker has a dtype instance of its own, which to_pickle writes out
        # differently from numpy's shared int16; rebuilding every clip on the shared one keeps the
        # files byte-identical whatever the number of workers.
        return [np.frombuffer(clip, dtype=np.int16).copy() for clip in clips]


def build_demo_corpus(
    out_dir: str | Path,
    seed: int = 0,
    split_by: str = "clip",
    n_speakers: int = DEFAULT_SPEAKERS,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Writes train.pkl, dev.pkl, test.pkl, test_stt.pkl, dev_stt.pkl (+ corpus.json describing
    them) into out_dir; returns clip counts per split.

    `split_by="clip"` splits clips at random (a sentence can be in train and test, as the
    reference's main partition); `split_by="script"` assigns whole scripts, so no test sentence
    is ever heard in training. Both are stratified by emotion, about 80/10/10. `workers` defaults
    to os.cpu_count(); the output does not depend on it.
    """
    return build_demo_corpora({split_by: out_dir}, seed, n_speakers, workers, progress)[split_by]


BUILD_MARK = ".demo-corpus"  # left in a folder a demo corpus is built in, from the build's start


def build_demo_corpora(
    out_dirs: Mapping[str, str | Path],
    seed: int = 0,
    n_speakers: int = DEFAULT_SPEAKERS,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, dict[str, int]]:
    """The same clips, synthesised once, split several ways: `out_dirs` maps a partition ("clip",
    "script") to its folder, written as `build_demo_corpus` writes one. Returns the counts per
    partition and split."""
    unknown = [split_by for split_by in out_dirs if split_by not in SPLIT_BY]
    if unknown or not out_dirs:
        raise ValueError(f"split_by must be one of {SPLIT_BY}, got {unknown or 'nothing'}")
    if not 1 <= n_speakers <= len(SPEAKER_VARIANTS):
        raise ValueError(f"n_speakers must be between 1 and {len(SPEAKER_VARIANTS)}, got {n_speakers}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in 0..2**32-1, got {seed}")
    for folder in map(Path, out_dirs.values()):
        # "data" is where a user's own pickles usually are: a demo corpus replaces only a demo corpus
        # (a finished one has corpus.json, one whose build stopped the mark of its start).
        if any(folder.glob("*.pkl")) and not ((folder / "corpus.json").is_file() or (folder / BUILD_MARK).is_file()):
            raise FileExistsError(f"{folder} holds split pickles that are not a demo corpus (no corpus.json): "
                                  "choose another --out")  # fmt: skip
    espeak = _espeak_executable()
    workers = workers or os.cpu_count() or 1

    scripts = load_demo_scripts()
    speakers = SPEAKER_VARIANTS[:n_speakers]
    jobs = [
        ClipJob(seed, speaker, variant, script.script_id, script.sentence, script.emotion)
        for speaker, variant in enumerate(speakers)
        for script in scripts.itertuples()
    ]
    out_dirs = {split_by: Path(folder) for split_by, folder in out_dirs.items()}
    # corpus.json is written last and marks a finished build; a rebuild that stops halfway
    # must not leave an old one vouching for a mix of old and new pickles.
    for folder in out_dirs.values():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / BUILD_MARK).touch()
        (folder / "corpus.json").unlink(missing_ok=True)
    audio = _synthesise_all(jobs, workers, progress)

    clips = pd.DataFrame(
        {
            "speaker": [job.speaker for job in jobs],
            "text": [job.sentence for job in jobs],
            "label": [job.emotion for job in jobs],
            "script_id": [job.script_id for job in jobs],
        }
    )
    vocabulary = hangul_vocabulary(scripts["sentence"])
    # A random stream of its own per clip, so that transcripts do not move when the audio draws do.
    transcripts = [
        recogniser_transcript(job.sentence, vocabulary, np.random.default_rng([seed, job.speaker, job.script_id, STT_STREAM]))
        for job in jobs
    ]
    description = {
        "seed": seed,
        "speakers": list(speakers),  # index = person_ix
        "n_scripts": len(scripts),
        "sample_rate": SAMPLE_RATE,
        "synthesiser": _espeak_version(espeak),
    }
    speakers_of, sentences_of, labels_of = (clips[c].to_numpy() for c in ("speaker", "text", "label"))
    counts = {}
    for split_by, out_dir in out_dirs.items():
        split_of = assign_splits(clips, _SPLIT_UNIT[split_by], SPLIT_RATIOS, seed)
        check_leakage(clips, split_of, _SPLIT_UNIT[split_by])
        members = {name: np.flatnonzero(split_of == name) for name in SPLITS}
        members |= {f"{name}_stt": members[name] for name in STT_SPLITS}
        for name, rows in members.items():
            sentences = [transcripts[i] for i in rows] if name.endswith("_stt") else sentences_of[rows]
            write_reference_pickle(out_dir / f"{name}.pkl", speakers_of[rows], [audio[i] for i in rows], sentences,
                                   labels_of[rows])  # fmt: skip
        write_json(
            out_dir / "corpus.json",
            {
                **description,
                "split_by": split_by,
                "counts": {
                    name: {emotion: int((labels_of[rows] == emotion).sum()) for emotion in REFERENCE_LABELS}
                    for name, rows in members.items()
                },
                "script_ids": {name: sorted(set(clips["script_id"][members[name]].tolist())) for name in SPLITS},
            },
        )
        counts[split_by] = {name: len(rows) for name, rows in members.items()}
    return counts
