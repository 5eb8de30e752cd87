"""A model folder that stands alone: everything prediction needs, copied out of a run folder, so it
keeps working after the run, its corpus and the encoder it was trained with are gone.

MODEL_DIR/
  config.json        the run's configuration and widths (`models.checkpoint`); the text encoder is
                     named relative to the folder
  model.safetensors  the weights, the training set's MFCC statistics among them (`audio_norm.mean`
                     and `.std`), with the settings they were trained with in their metadata
  char_ngrams.json   the fitted character n-grams, for models that read them
  text_encoder/      the Hugging Face encoder and tokenizer, for models that read encoder states
  model.onnx         with --onnx: the model as one graph for onnxruntime (`onnx_graph`)
  README.md          the model card: what it was trained on, test figures, intended use and limits
  audiotext.json     format, versions, source run, and a digest of every other file

Loading (`verify_model_folder`) checks every digest, so a file changed or swapped after export is
named instead of predicting with mismatched parts.
"""

from __future__ import annotations

import datetime
import json
import platform
import shutil
from pathlib import Path

import safetensors
import torch
import transformers

import audiotext
from audiotext.config import RunConfig
from audiotext.data.loading import reads_ngrams, text_encoder_for
from audiotext.features.encoders import LEGACY_CONFIG, load_text_encoder, save_directory
from audiotext.features.ngrams import NGRAMS_FILE
from audiotext.features.text import default_encoder_path
from audiotext.io import file_digest, write_json
from audiotext.inference.onnx_graph import ONNX_FILE, export_onnx
from audiotext.models.checkpoint import (
    CONFIG_FILE, FINISHED_FILE, CheckpointError, load_config, load_run, save_config, save_weights, tested_as, tested_splits,
)  # fmt: skip

FOLDER_INFO = "audiotext.json"
FOLDER_FORMAT = "audiotext-model/1"
TEXT_ENCODER_DIR = "text_encoder"
MODEL_CARD = "README.md"
MODEL_KINDS = {
    "audio": "audio-only Transformer",
    "text": "text-only classifier (the mean of the text steps, then a linear layer)",
    "cross": "cross-modal Transformer (MulT)",
    "early": "early fusion",
    "late": "late fusion",
    "tfn": "tensor fusion network",
    "lmf": "low-rank multimodal fusion",
    "linear": "logistic regression on MFCC statistics and character n-grams",
}


def is_model_folder(path: str | Path) -> bool:
    return (Path(path) / FOLDER_INFO).is_file()


def export_model(source: str | Path, out_dir: str | Path, onnx: bool = False, setting: str = "out_dir") -> Path:
    """Writes the model folder of `source` (a run folder, or a model folder to copy) into `out_dir`,
    atomically; returns `out_dir`. The weights are loaded and checked against the configuration
    first, so a broken run is refused rather than exported. `onnx` adds model.onnx (see
    `audiotext.inference.onnx_graph`). An existing `out_dir` is replaced only when it is empty or a
    model folder: a run folder has a config.json too, and is refused, named as `setting`."""
    source, out_dir = Path(source), Path(out_dir)
    if out_dir.resolve() == source.resolve() or source.resolve() in out_dir.resolve().parents:
        raise ValueError(f"{out_dir}: the model folder must lie outside the run folder {source}")
    if is_model_folder(source):
        verify_model_folder(source)
    cfg, dims = load_config(source)
    _, model = load_run(source)

    def write(tmp: Path) -> None:
        if cfg.model.modality != "audio":
            if reads_ngrams(cfg):
                shutil.copy2(source / NGRAMS_FILE, tmp / NGRAMS_FILE)
            else:
                _copy_text_encoder(Path(cfg.text.encoder) if cfg.text.encoder else default_encoder_path(),
                                   tmp / TEXT_ENCODER_DIR)  # fmt: skip
                cfg.text.encoder = TEXT_ENCODER_DIR
        save_config(tmp, cfg, dims)
        save_weights(tmp, model, cfg, dims)
        shutil.copy2(source / FINISHED_FILE, tmp / FINISHED_FILE)
        if onnx:
            exported, _ = load_config(tmp)  # the copied encoder, named by its place in `tmp`
            encoder = text_encoder_for(exported, torch.device("cpu"), tmp)
            export_onnx(model.cpu(), exported, encoder, dims.audio, tmp / ONNX_FILE)
        if is_model_folder(source):
            shutil.copy2(source / MODEL_CARD, tmp / MODEL_CARD)
        else:
            (tmp / MODEL_CARD).write_text(model_card(source, cfg), encoding="utf-8")
        write_json(tmp / FOLDER_INFO, {
            "format": FOLDER_FORMAT,
            "source": str(source.resolve()),
            "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "versions": versions(),
            "files": _digests(tmp),
        })  # fmt: skip

    return save_directory(out_dir, write, marker=FOLDER_INFO, setting=setting)


def _copy_text_encoder(encoder: Path, out_dir: Path) -> None:
    """The encoder's own files (a subfolder such as a classifier's eval/ is not part of it); a legacy
    KorBERT folder is written in the Hugging Face layout instead, which is what loads fastest."""
    if (encoder / LEGACY_CONFIG).is_file() and not (encoder / CONFIG_FILE).is_file():
        tokenizer, model = load_text_encoder(encoder)
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        return
    out_dir.mkdir()
    for path in encoder.iterdir():
        if path.is_file():
            shutil.copy2(path, out_dir / path.name)


def versions() -> dict[str, str]:
    return {
        "audiotext": audiotext.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
    }


def _digests(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): file_digest(path).hex()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != FOLDER_INFO
    }


def verify_model_folder(folder: str | Path) -> dict:
    """The folder's audiotext.json, once every file it lists is there unchanged; CheckpointError
    naming the first file that is missing, added or changed otherwise."""
    folder = Path(folder)
    try:
        info = json.loads((folder / FOLDER_INFO).read_text(encoding="utf-8"))
        recorded = info["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{folder / FOLDER_INFO}: not a readable model-folder description ({err})") from None
    if info.get("format") != FOLDER_FORMAT:
        raise CheckpointError(f"{folder / FOLDER_INFO}: format {info.get('format')!r}, this audiotext reads {FOLDER_FORMAT}")
    found = _digests(folder)
    for name in sorted(recorded.keys() | found.keys()):
        if name not in found:
            raise CheckpointError(f"{folder / name}: missing from the model folder")
        if name not in recorded:
            raise CheckpointError(f"{folder / name}: not part of the exported model folder (added later?)")
        if found[name] != recorded[name]:
            raise CheckpointError(f"{folder / name}: changed since the model folder was exported (its digest differs)")
    return info


def model_card(run_dir: Path, cfg: RunConfig) -> str:
    """README.md of a model folder: what the model is, what it was trained on, its test figures."""
    reads = {"audio": "the audio", "text": "the transcript"}.get(cfg.model.modality, "the audio and its transcript")
    audio = f"{cfg.audio.n_mfcc} MFCCs" + (" with pitch, voicing and energy" if cfg.audio.features != "mfcc" else "")
    text = "character 1-3-gram TF-IDF" if reads_ngrams(cfg) else "the states of a BERT-family encoder (in text_encoder/)"
    lines = [
        f"# {cfg.name}: speech emotion recognition",
        "",
        f"A {MODEL_KINDS.get(cfg.model.modality, cfg.model.modality)} that reads {reads} and predicts one of "
        f"{len(cfg.labels)} emotions: {', '.join(cfg.labels)}. Exported by audiotext {audiotext.__version__} "
        f"from the run `{run_dir.resolve()}`.",
        "",
        "## Inputs",
        "",
    ]
    if cfg.model.modality != "text":  # a text-only model reads no audio feature
        lines.append(f"- Audio: any file PyAV decodes, or samples with their rate; mono or mixed down; resampled to "
                     f"{cfg.audio.resample_rate} Hz; {audio} per frame, the first {cfg.audio.max_len_for_audio} frames "
                     f"({cfg.audio.max_len_for_audio * cfg.audio.n_fft_size // 2 / cfg.audio.resample_rate:.1f} s).")  # fmt: skip
    if cfg.model.modality != "audio":
        lines.append(f"- Text: what is said, read as {text}; with the `asr` extra a clip without a "
                     "transcript is transcribed offline by Vosk.")  # fmt: skip
    lines += [
        "",
        "## Training",
        "",
        f"- Data: `{cfg.data_path}` (its train split; dev chose the epoch by {cfg.train.select_by}).",
        f"- Seed {cfg.train.seed}, batch {cfg.train.batch_size}, learning rate {cfg.train.lr}, "
        f"at most {cfg.train.num_epochs} epochs" + (f", early stop after {cfg.train.early_stop}" if cfg.train.early_stop else "") + ".",
        "",
        "## Test figures",
        "",
    ]  # fmt: skip
    tested = tested_splits(run_dir, cfg)
    if not tested:
        lines.append("The run was not tested before export: no figures.")
    for split, metrics in tested.items():
        lines += [
            f"### {tested_as(split, metrics, cfg)} ({metrics['n']} clips of `{metrics.get('data', 'the data it was tested on')}`)",
            "",
            f"accuracy {100 * metrics['accuracy']:.2f} · macro-F1 {100 * metrics['macro_f1']:.2f} · "
            f"weighted-F1 {100 * metrics['weighted_f1']:.2f}",
            "",
            "Confusion matrix (rows: true, columns: predicted):",
            "",
            "| | " + " | ".join(metrics["labels"]) + " |",
            "|---|" + "---:|" * len(metrics["labels"]),
            *(f"| {label} | " + " | ".join(map(str, row)) + " |"
              for label, row in zip(metrics["labels"], metrics["confusion_matrix"])),
            "",
        ]  # fmt: skip
    lines += [
        "## Intended use and limits",
        "",
        "- For research on speech emotion recognition, on recordings like the training data: the "
        "same language, speaking style and recording conditions. Figures on other speech will differ.",
        "- Not for decisions about people (hiring, health, policing): emotion labels of acted or "
        "synthetic speech say little about what a real speaker feels.",
        "- A model trained on the built-in demo corpus has heard only espeak-ng's synthetic voices.",
        "",
        "## Use",
        "",
        "```python",
        "from audiotext.inference.recognizer import EmotionRecognizer",
        "recognizer = EmotionRecognizer.from_pretrained('MODEL_DIR')",
        "recognizer.predict('clip.wav', text='...')  # [{'label': ..., 'score': ...}, ...], best first",
        "```",
        "",
    ]
    return "\n".join(lines)
