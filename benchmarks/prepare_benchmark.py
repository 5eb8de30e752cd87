"""Throughput and memory of `prepare_korean` on a synthetic raw corpus.

Builds a small demo corpus (espeak-ng speech), writes it out as `actors x 350` m2ts videos (AC-3
stereo 48 kHz audio, a 16x16 black video track at 1 fps) in a temporary folder, then prepares them
and prints files per second, peak RSS and the ratio of peak memory to the total audio bytes.

    python benchmarks/prepare_benchmark.py            # 6 actors: 2,100 videos
    python benchmarks/prepare_benchmark.py --actors 2 # quicker
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import pandas as pd
import soundfile as sf

from audiotext.data.media import write_media
from audiotext.data.prepare import PrepareReport, prepare_korean
from audiotext.data.synthesis import build_demo_corpus, load_demo_scripts

DEMO_SPEAKERS = 2
_clips: dict[tuple[int, int], object] = {}  # (speaker, script_id) → int16 clip, per generator worker


def _load_demo(demo_dir: Path) -> None:
    scripts = load_demo_scripts()
    for name in ("train", "dev", "test"):
        frame = pd.read_pickle(demo_dir / f"{name}.pkl")
        for speaker, audio, sentence in zip(frame.person_ix, frame.audio, frame.Sentence):
            script_id = int(scripts.script_id[scripts.sentence == sentence].iloc[0])
            _clips[(speaker, script_id)] = audio


def _write_video(job: tuple[Path, int, int]) -> None:
    path, actor, script_id = job
    write_media(path, _clips[(actor % DEMO_SPEAKERS, script_id)], 48000, "ac3", channels=2, video=True)


def _write_script_file(path: Path) -> None:
    lines = []
    for emotion, block in load_demo_scripts().groupby("emotion", sort=False):
        lines.append(emotion)
        lines += [f"{row.script_id}. [{row.sentence}]" for row in block.itertuples()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def _make_corpus(tmp: Path, actors: int, workers: int | None) -> None:
    """The demo corpus, the script file and the videos under tmp/raw."""
    build_demo_corpus(tmp / "demo", n_speakers=DEMO_SPEAKERS, progress=False)
    _write_script_file(tmp / "scripts.txt")
    jobs = []
    for actor in range(actors):
        folder = tmp / "raw" / f"{actor:03d}"
        folder.mkdir(parents=True)
        jobs += [(folder / f"{actor:03d}-{s}.m2ts", actor, s) for s in load_demo_scripts().script_id]
    with multiprocessing.Pool(workers, initializer=_load_demo, initargs=(tmp / "demo",)) as pool:
        pool.map(_write_video, jobs, chunksize=16)


def _timed_prepare(tmp: Path, pickles: bool) -> tuple[float, PrepareReport]:
    started = time.perf_counter()
    report = prepare_korean(tmp / "raw", tmp / "scripts.txt", tmp / "out", progress=False, pickles=pickles)
    return time.perf_counter() - started, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=6)
    parser.add_argument("--workers", type=int, default=None, help="processes writing the videos")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        # In a child process: this one never holds the demo speech, so its peak RSS is prepare's own
        # (getrusage's maxrss survives fork and exec, so the child must be the big one, not this).
        maker = multiprocessing.Process(target=_make_corpus, args=(tmp, args.actors, args.workers))
        maker.start()
        maker.join()
        if maker.exitcode != 0:
            raise SystemExit(f"building the benchmark corpus failed (exit code {maker.exitcode})")
        videos = sorted((tmp / "raw").rglob("*.m2ts"))
        video_bytes = sum(p.stat().st_size for p in videos)
        print(f"wrote {len(videos)} videos ({video_bytes / 2**20:.1f} MiB) in {time.perf_counter() - started:.1f} s")

        # Manifest only first: getrusage keeps the maximum, so the smaller peak must come first.
        rss_before = _peak_rss_bytes()
        elapsed, report = _timed_prepare(tmp, pickles=False)
        peak_manifest_only = _peak_rss_bytes()
        rerun_elapsed, rerun = _timed_prepare(tmp, pickles=True)
        peak = _peak_rss_bytes()
        audio_bytes = sum(sf.info(p).frames * 2 for p in (tmp / "out" / "audio").glob("*.flac"))

    print(f"prepare_korean (manifest only): {len(videos)} files in {elapsed:.1f} s = {len(videos) / elapsed:.1f} files/s")
    print(f"resumed rerun writing the pickles: {rerun.n_cached} cached, {rerun.n_decoded} decoded, in {rerun_elapsed:.1f} s")
    print(f"rejects: {len(report.rejects)}; clips per split: {report.counts[['train', 'dev', 'test']].sum().to_dict()}")
    print(f"total audio (int16, 48 kHz mono): {audio_bytes / 2**20:.1f} MiB")
    print(f"peak RSS, manifest only: {peak_manifest_only / 2**20:.1f} MiB; growth / audio bytes: "
          f"{(peak_manifest_only - rss_before) / audio_bytes:.2f}")  # fmt: skip
    print(f"peak RSS with pickles: {peak / 2**20:.1f} MiB (before prepare: {rss_before / 2**20:.1f} MiB)")
    print(f"peak RSS / audio bytes: {peak / audio_bytes:.2f}; growth during prepare / audio bytes: "
          f"{(peak - rss_before) / audio_bytes:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
