"""What each fusion flag is worth: `audiotext compare` of one model with every flag of a base set on,
then one changed at a time, over several seeds on the demo's script split (unseen sentences).

Prints, per setting, dev macro-F1 (mean ± std over seeds: what the defaults were chosen on) and the
test and test_stt macro-F1 means (reported, never chosen on). Needs the demo corpus (`make demo`,
or `audiotext demo-corpus --split_by script --out demo_runs/corpus/script`).

    python benchmarks/fusion_flags_benchmark.py --model early --seeds 5
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

BASE = ["--text_features", "ngrams", "--merge_how", "stats", "--audio_features", "mfcc+prosody",
        "--modality_dropout", "0.3", "--transcript_noise", "0", "--wide"]  # fmt: skip
CHANGES = {
    "base: n-grams, stats pooling, prosody, modality dropout 0.3, wide": [],
    "without modality dropout": ["--modality_dropout", "0"],
    "without the wide path": ["--no-wide"],
    "with transcript noise 0.3": ["--transcript_noise", "0.3"],
    "mean pooling instead of statistics pooling": ["--merge_how", "average"],
    "best epoch by dev loss instead of dev macro-F1": ["--select_by", "loss"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("demo_runs/corpus/script"))
    parser.add_argument("--model", default="early")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--encoder", default=None,
                        help="also measure this fine-tuned encoder's states instead of the n-grams")  # fmt: skip
    args = parser.parse_args()
    changes = dict(CHANGES)
    if args.encoder:
        changes["encoder states instead of n-grams"] = ["--text_features", "encoder", "--encoder", args.encoder]
    print(f"| {args.model}, {args.seeds} seeds | dev macro-F1 | test macro-F1 | test_stt macro-F1 |\n|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (title, change) in enumerate(changes.items()):
            out = Path(tmp) / str(i)
            command = [sys.executable, "-m", "audiotext.cli", "compare", "--data", str(args.data), "--out", str(out),
                       "--models", args.model, "--seeds", str(args.seeds), "--resample_rate", "8000",
                       "--num_epochs", "25", "--early_stop", "5", "--quiet", *BASE, *change]  # fmt: skip
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            dev = pd.read_csv(out / "results.csv")["dev_macro_f1"] * 100
            test = pd.read_csv(out / "comparison.csv").query("metric == 'macro_f1'").set_index("test_set")["mean"] * 100
            print(f"| {title} | {dev.mean():.2f} ± {dev.std():.2f} | {test['test']:.2f} | {test.get('test_stt', float('nan')):.2f} |",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
