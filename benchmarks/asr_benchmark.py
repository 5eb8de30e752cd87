"""Offline transcription on the demo corpus: Vosk's character error rate, its speed, and what its
transcripts cost the trained models.

Transcribes the script split's test clips with Vosk (`audiotext transcribe`), prints the character
error rate against the true sentences and that of the demo's simulated `test_stt` for comparison,
the seconds per clip and the real-time factor; then tests every seed of each model on `test` and
on Vosk's transcripts and prints macro-F1 mean ± std. Needs `make demo`'s folder.

    python benchmarks/asr_benchmark.py
    python benchmarks/asr_benchmark.py --demo /path/to/demo_runs --models mult linear
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from audiotext.config import REFERENCE_LABELS
from audiotext.data.asr import VoskTranscriber, character_error_rate, transcribe_split
from audiotext.data.corpus import load_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, default=Path("demo_runs"))
    parser.add_argument("--models", nargs="+", default=["mult", "linear"])
    args = parser.parse_args()
    corpus = args.demo / "corpus" / "script"
    test = load_split(corpus / "test.pkl", REFERENCE_LABELS)
    simulated = load_split(corpus / "test_stt.pkl", REFERENCE_LABELS)
    seconds = sum(len(clip) for clip in test.audio) / 48000
    with tempfile.TemporaryDirectory() as tmp:
        vosk_split = Path(tmp) / "vosk_test_stt.pkl"
        transcriber = VoskTranscriber()
        started = time.perf_counter()
        result = transcribe_split(corpus, "test", vosk_split, transcriber, REFERENCE_LABELS, progress=False)
        took = time.perf_counter() - started
        print(f"{result['clips']} clips, {seconds:.0f} s of speech: Vosk CER {100 * result['cer']:.1f}%, "
              f"simulated test_stt CER {100 * character_error_rate(test.sentences, simulated.sentences):.1f}%; "
              f"{took:.0f} s ({took / result['clips']:.2f} s a clip, {took / seconds:.2f} x real time); "
              f"nothing heard in {result['nothing_heard']}")  # fmt: skip
        print("\n| model | seeds | test macro-F1 | Vosk transcripts macro-F1 |\n|---|---:|---:|---:|")
        for model in args.models:
            scores = {"test": [], "vosk_test_stt": []}
            runs = sorted((args.demo / "script" / "runs" / "corpus" / model).glob("seed*"))
            for run in runs:
                out = Path(tmp) / model / run.name
                subprocess.run([sys.executable, "-m", "audiotext.cli", "test", "--run_dir", str(run), "--data_path",
                                str(corpus), "--split", "test", str(vosk_split), "--eval_dir", str(out), "--quiet"],
                               check=True, stdout=subprocess.DEVNULL)  # fmt: skip
                for split in scores:
                    scores[split].append(100 * json.loads((out / split / "metrics.json").read_text())["macro_f1"])
            cells = [f"{np.mean(v):.2f} ± {np.std(v, ddof=1):.2f}" for v in scores.values()]
            print(f"| {model} | {len(runs)} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
