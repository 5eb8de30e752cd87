"""`make demo`: `audiotext compare` on the built-in demo corpus, on both of its partitions.

1. Synthesise the corpus once and split it two ways: by clip (a test sentence was heard in
   training, read by another voice: the reference's main partition) and by script (no test sentence
   in training: the honest test of text).
2. On each partition, the comparison with its defaults (`audiotext.recipes.compare`): the linear
   baseline, audio-only, text-only and the cross-modal model over several seeds, tested on `test`
   and `test_stt` (recogniser transcripts).

3. The script split's first `mult` run exported as a model folder (model/, with its ONNX graph),
   and one test clip of each emotion as a WAV file with a manifest (examples/): what the README's
   prediction commands (`audiotext predict`, `serve`) are tried on.

Everything lands in one folder: corpus/<partition>/, <partition>/ (a comparison folder, with its
report.html), comparison.md, model/, examples/. A rerun reuses the corpus when it was built with
the same seed and scripts, and the feature cache makes the features of a rerun free.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import soundfile as sf

from audiotext.config import REFERENCE_LABELS, AudioConfig
from audiotext.data.corpus import load_split
from audiotext.data.synthesis import DEFAULT_SPEAKERS, STT_SPLITS, build_demo_corpora, load_demo_scripts
from audiotext.errors import SettingError
from audiotext.features.cache import FeatureCache
from audiotext.inference.export import export_model
from audiotext.io import atomic_path
from audiotext.recipes.compare import CompareSettings, run_comparison, say

PARTITIONS = {"clip": "clip", "script": "script (sentence-disjoint)"}

DEMO_MODELS = ("linear", "audio", "text", "mult")
# Unseen sentences (the script split) are where fusion has to prove itself: 5 seeds there, as the
# comparison's default; 2 on the clip split, where the text side recognises memorised sentences.
# Both with the four models took about 19 minutes on two cores.
DEMO_SEEDS = {"clip": 2, "script": 5}
EXPORTED_RUN = ("script", "mult", 0)  # partition, model, seed of the run exported to model/
ENGLISH_LABELS = dict(zip(REFERENCE_LABELS, ("fear", "surprise", "anger", "sadness", "neutral", "happiness", "disgust")))


def demo_settings(seeds: int) -> CompareSettings:
    """The comparison's defaults, changed only so the demo fits on two CPU cores: the reference
    scripts' 8 kHz MFCCs (half the frames), at most 25 epochs and a patience of 5."""
    defaults = CompareSettings(labels=REFERENCE_LABELS)
    return replace(
        defaults,
        models=DEMO_MODELS,
        seeds=tuple(range(seeds)),
        audio=replace(defaults.audio, resample_rate=8000),
        train=replace(defaults.train, num_epochs=25, early_stop=5),
    )


def run_demo(out: str | Path, seed: int = 0, seeds: int | None = None, cache: FeatureCache | None = None,
             progress: bool = True, resume: bool = False) -> str:  # fmt: skip
    """Runs the demo into `out` with `seeds` seeds per model (None: DEMO_SEEDS); returns the tables
    it printed. Features come from `cache` where it has them (None: in memory). Each comparison
    starts again, or with `resume` continues where a stopped demo left it."""
    if seeds is not None and seeds < 1:  # before the corpus is synthesised; 0 ran the default demo
        raise SettingError(f"--seeds must be at least 1, got {seeds}")
    out = Path(out)
    started = time.perf_counter()
    corpora = _corpora(out / "corpus", seed, progress)
    tables = []
    for partition, corpus in corpora.items():
        settings = demo_settings(DEMO_SEEDS[partition] if seeds is None else seeds)
        result = run_comparison(corpus, out / partition, settings, cache, progress,
                                title=f"audiotext demo: {PARTITIONS[partition]} split", resume=resume,
                                overwrite=not resume)  # fmt: skip
        tables.append(f"## {PARTITIONS[partition]} split\n\n{result['tables']}")
    partition, model, run_seed = EXPORTED_RUN
    exported = export_model(out / partition / "runs" / "corpus" / model / f"seed{run_seed}", out / "model", onnx=True)
    examples = write_examples(corpora[partition] / "test.pkl", out / "examples")
    seconds = time.perf_counter() - started
    text = "\n\n".join(tables)
    with atomic_path(out / "comparison.md") as tmp:
        tmp.write_text(f"# audiotext demo\n\n{text}\n\nWhole demo: {seconds:.0f} s.\n", encoding="utf-8")
    print(text)
    reports = "  ".join(str(out / partition / "report.html") for partition in corpora)
    print(f"\nreports: {reports}  (demo took {seconds:.0f} s)")
    first = pd.read_csv(examples).iloc[0]
    print(f"\nmodel folder: {exported} ({model}, {partition} split, seed {run_seed}); try it:\n"
          f"  audiotext predict {exported} --audio {examples.parent / first['audio']} --text \"{first['text']}\"\n"
          f"  audiotext predict {exported} --manifest {examples} --out predictions.csv\n"
          f"  audiotext serve {exported}   # then open http://127.0.0.1:8000/")  # fmt: skip
    return text


def write_examples(split_file: Path, folder: Path) -> Path:
    """The first test clip of each emotion as folder/<emotion>.wav, and folder/examples.csv (a
    manifest: audio, text, label) listing them."""
    split = load_split(split_file, REFERENCE_LABELS)
    rows = []
    for label_id, label in enumerate(REFERENCE_LABELS):
        i = int((split.labels == label_id).argmax())
        name = f"{ENGLISH_LABELS[label]}.wav"
        with atomic_path(folder / name) as tmp:
            sf.write(tmp, split.audio[i], AudioConfig().sample_rate, subtype="PCM_16", format="WAV")
        rows.append({"audio": name, "text": split.sentences[i], "label": label})
    with atomic_path(folder / "examples.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    return folder / "examples.csv"


def _corpora(folder: Path, seed: int, progress: bool) -> dict[str, Path]:
    """The corpus split both ways, reused when a finished build with this seed and these scripts exists."""
    wanted = {"seed": seed, "n_scripts": len(load_demo_scripts()), "speakers": DEFAULT_SPEAKERS}
    folders = {partition: folder / partition for partition in PARTITIONS}

    def matches(partition_folder: Path, partition: str) -> bool:
        description = partition_folder / "corpus.json"
        if not description.exists():
            return False
        built = json.loads(description.read_text(encoding="utf-8"))
        found = {"seed": built.get("seed"), "n_scripts": built.get("n_scripts"), "speakers": len(built.get("speakers", []))}
        # A build from before dev_stt.pkl existed is built again rather than compared without it.
        has_stt = all(f"{split}_stt" in built.get("counts", {}) for split in STT_SPLITS)
        return found == wanted and built.get("split_by") == partition and has_stt

    if all(matches(path, partition) for partition, path in folders.items()):
        say(f"reusing the demo corpus in {folder}", progress)
    else:
        say(f"== synthesizing the demo corpus in {folder} ==", progress)
        build_demo_corpora(folders, seed=seed, n_speakers=DEFAULT_SPEAKERS, progress=progress)
    return folders
