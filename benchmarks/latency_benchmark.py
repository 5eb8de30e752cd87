"""How fast a trained model answers: load time, per-clip latency of a 3-second clip through the
Python API (PyTorch and ONNX) and over HTTP, and batched throughput, for each model kind.

Uses the run folders `make demo` leaves (seed 0 of each model on the script split) unless given
others; each is exported (with ONNX) into a temporary model folder first. Latencies are the
median (p50) and 95th percentile over --repeats calls after warm-up calls, with the transcript
given (no transcription). Throughput: clips per second of `predict_proba` over --batch clips in
batches of 32, each clip with another of the corpus's sentences (a batch of one sentence would have
it encoded once), against the single-clip rate 1 / p50 of the API, with the features computed in
the predicting process and with one feature worker process per CPU (`feature_workers`). For the
last model: where a clip's time goes (its audio features, the model on one clip and per clip of a
batch) and the batched / single ratio those parts allow on this machine; and `predict --manifest`
over as many MP3 copies of the clip, both ways.

    python benchmarks/latency_benchmark.py
    python benchmarks/latency_benchmark.py --runs demo_runs/script/runs/corpus/mult/seed0 --repeats 100
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import soundfile as sf
import torch

from audiotext.inference.batch import predict_manifest
from audiotext.inference.export import export_model
from audiotext.features.workers import FeatureWorkers
from audiotext.inference.recognizer import EmotionRecognizer, read_clip

DEMO_RUNS = Path("demo_runs/script/runs/corpus")
CLIP_SECONDS = 3.0
RATE = 48000


def three_second_clip(corpus: Path) -> tuple[np.ndarray, str]:
    """Test clips of the demo corpus end to end, cut at 3 s, and the first one's sentence."""
    test = pd.read_pickle(corpus / "test.pkl")  # our own corpus file, written by demo-corpus
    clip = np.concatenate(list(test["audio"].iloc[:4]))[: int(CLIP_SECONDS * RATE)]
    return clip, test["Sentence"].iloc[0]


def corpus_sentences(corpus: Path, n: int) -> list[str]:
    """n transcripts, the corpus's distinct sentences over and over."""
    splits = [pd.read_pickle(corpus / f"{split}.pkl") for split in ("train", "dev", "test")]  # our own files
    distinct = list(dict.fromkeys(s for split in splits for s in split["Sentence"]))
    return [distinct[i % len(distinct)] for i in range(n)]


def percentiles(call, repeats: int, warmup: int = 5) -> tuple[float, float]:
    """(p50, p95) in milliseconds."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.percentile(times, 50)), 1000 * float(np.percentile(times, 95))


@contextlib.contextmanager
def served(model_dir: Path):
    """`audiotext serve` on a free port of 127.0.0.1; yields its address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "audiotext.cli", "serve", str(model_dir), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    address = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{address}/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"audiotext serve {model_dir} did not answer in 60 s")
        yield address
    finally:
        server.terminate()
        server.wait()


def measure(run: Path, out: Path, wav: Path, clip: np.ndarray, text: str, sentences: list[str], repeats: int) -> dict:
    name = run.parent.name if run.name.startswith("seed") else run.name  # compare's MODEL/seedN, or a run's own name
    model_dir = export_model(run, out / name, onnx=True)
    loads = []
    for _ in range(3):
        start = time.perf_counter()
        recognizer = EmotionRecognizer.from_pretrained(model_dir, device="cpu")
        loads.append(time.perf_counter() - start)
    onnx = EmotionRecognizer.from_pretrained(model_dir, backend="onnx")
    given = text if recognizer.reads_text else None
    row = {"model": name, "kind": recognizer.cfg.model.modality,
           "text": recognizer.cfg.text.features if recognizer.reads_text else "-",
           "load_s": float(np.median(loads))}  # fmt: skip
    row["api_p50"], row["api_p95"] = percentiles(lambda: recognizer.predict(str(wav), text=given), repeats)
    row["onnx_p50"], row["onnx_p95"] = percentiles(lambda: onnx.predict(str(wav), text=given), repeats)
    with served(model_dir) as address, httpx.Client(timeout=30) as client:
        audio = wav.read_bytes()

        def post():
            response = client.post(f"{address}/predict", files={"audio": ("clip.wav", audio, "audio/wav")},
                                   data={"text": given} if given else {})  # fmt: skip
            response.raise_for_status()

        row["http_p50"], row["http_p95"] = percentiles(post, repeats)
    row["single_clips_per_s"] = 1000 / row["api_p50"]
    clips = [{"raw": clip, "sampling_rate": RATE}] * len(sentences)
    texts = sentences if given else [None] * len(sentences)
    for workers, key in ((0, "batched"), (os.cpu_count(), "workers")):
        with EmotionRecognizer.from_pretrained(model_dir, device="cpu", feature_workers=workers) as batched:
            batched.predict_proba(clips[:64], texts[:64])  # warm-up, and the workers started
            start = time.perf_counter()
            batched.predict_proba(clips, texts, batch_size=32)
            row[f"{key}_clips_per_s"] = len(clips) / (time.perf_counter() - start)
            row[f"{key}_speedup"] = row[f"{key}_clips_per_s"] / row["single_clips_per_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", type=Path,
                        default=[DEMO_RUNS / m / "seed0" for m in ("linear", "audio", "text", "mult")])  # fmt: skip
    parser.add_argument("--corpus", type=Path, default=Path("demo_runs/corpus/script"))
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--batch", type=int, default=256, help="clips in the throughput measurement")
    args = parser.parse_args()
    clip, text = three_second_clip(args.corpus)
    sentences = corpus_sentences(args.corpus, args.batch)
    print(f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs; a {CLIP_SECONDS:.0f}-second clip, "
          f"transcript given; times in ms")  # fmt: skip
    print("| model | reads text as | load (s) | API p50 / p95 | ONNX p50 / p95 | HTTP p50 / p95 | single clips/s "
          f"| batched clips/s | batched / single | batched, {os.cpu_count()} feature workers, clips/s | that / single |"
          "\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "clip.wav"
        sf.write(wav, clip, RATE, subtype="PCM_16")
        for run in args.runs:
            r = measure(run, Path(tmp), wav, clip, text, sentences, args.repeats)
            print(f"| {r['model']} ({r['kind']}) | {r['text']} | {r['load_s']:.2f} | {r['api_p50']:.1f} / {r['api_p95']:.1f} "
                  f"| {r['onnx_p50']:.1f} / {r['onnx_p95']:.1f} | {r['http_p50']:.1f} / {r['http_p95']:.1f} "
                  f"| {r['single_clips_per_s']:.0f} | {r['batched_clips_per_s']:.0f} | {r['batched_speedup']:.1f}× "
                  f"| {r['workers_clips_per_s']:.0f} | {r['workers_speedup']:.1f}× |",
                  flush=True)  # fmt: skip
        where_the_time_goes(args.runs[-1], clip, sentences, args.repeats, r["api_p50"])
        manifest_throughput(args.runs[-1], Path(tmp), clip, sentences)


def where_the_time_goes(run: Path, clip: np.ndarray, sentences: list[str], repeats: int, single_p50: float,
                        batch: int = 32) -> None:
    """A clip's audio features and the model's share (text features, forward pass, softmax) alone,
    for one clip and per clip of a batch, and the most a batch can gain over the API's single clip
    (`single_p50` ms) with them: a batch shares the model's calls, never a clip's features, and on C
    cores at best C clips' work runs at once."""
    recognizer = EmotionRecognizer.from_pretrained(run, device="cpu")
    cores = os.cpu_count()
    jobs = [({"raw": clip, "sampling_rate": RATE}, None, f"clip {i}", read_clip) for i in range(batch)]
    in_process = FeatureWorkers(recognizer.cfg.audio)
    features = in_process.submit(jobs)()  # [(T, F)] * batch
    texts = [recognizer._sentence(s, s) for s in sentences[:batch]] if recognizer.reads_text else None

    def model(n: int) -> float:  # ms a clip for n clips whose features are ready
        # The recognizer's own model step, which `predict` runs after the features.
        return percentiles(lambda: recognizer._batch_proba(n, lambda: features[:n], texts and texts[:n]), repeats)[0] / n

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    one_core = percentiles(lambda: in_process.submit(jobs[:1])(), repeats)[0]
    batched_one_thread = model(batch)
    torch.set_num_threads(threads)
    single, batched = model(1), model(batch)
    print(f"\nWhere the time of {run} goes (ms, median of {repeats}): a clip's audio features {one_core:.2f} "
          f"(one core); the model {single:.2f} for one clip, {batched:.2f} a clip in a batch of {batch} "
          f"({batched_one_thread:.2f} on one thread); the API's single clip {single_p50:.2f}. The most a batch can "
          f"gain over it on {cores} cores, every core busy with features or the model and nothing else: "
          f"{cores * single_p50 / (one_core + batched_one_thread):.1f}×; were the features free: "
          f"{single_p50 / batched:.1f}×")


def manifest_throughput(run: Path, tmp: Path, clip: np.ndarray, sentences: list[str]) -> None:
    """`predict --manifest` over a copy of the clip as an MP3 file for each sentence (decoding one
    costs about as much as its features), with the features computed in the predicting process and
    in workers."""
    mp3 = tmp / "mp3"
    mp3.mkdir()
    n = len(sentences)
    sf.write(mp3 / "0.mp3", clip, RATE)
    for i in range(1, n):
        shutil.copyfile(mp3 / "0.mp3", mp3 / f"{i}.mp3")
    pd.DataFrame({"audio": [f"{i}.mp3" for i in range(n)], "text": sentences}).to_csv(mp3 / "clips.csv", index=False)
    rates = []
    for workers in (0, os.cpu_count()):
        with EmotionRecognizer.from_pretrained(run, device="cpu", feature_workers=workers) as recognizer:
            predict_manifest(recognizer, mp3 / "clips.csv", mp3 / "warm-up.csv", progress=False)
            start = time.perf_counter()
            predict_manifest(recognizer, mp3 / "clips.csv", mp3 / "predictions.csv", progress=False)
            rates.append(n / (time.perf_counter() - start))
    print(f"\n`predict --manifest` of {n} MP3 files ({run}): {rates[0]:.0f} clips/s, "
          f"{rates[1]:.0f} with {os.cpu_count()} feature workers ({rates[1] / rates[0]:.1f}×)")


if __name__ == "__main__":
    main()
