"""`audiotext compare` end to end on real speech: folds, seeds, intervals, the report."""

import base64
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fontTools.ttLib import TTFont

from audiotext.config import REFERENCE_LABELS
from audiotext.data.manifest import load_any_split
from audiotext.errors import SettingError
from audiotext.evaluation.metrics import classification_metrics
from audiotext.recipes.compare import ALL_MODELS, EMA, MODALITY_DROPOUT, CompareSettings, _claim, _summarise, model_config, spoken_sentences

ROOT = Path(__file__).resolve().parents[1]


def compare(*args) -> str:
    result = subprocess.run([sys.executable, "-m", "audiotext.cli", "compare", "--resample_rate", "8000", "--quiet", *args],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def check_report(path: Path) -> str:
    """The page stands alone: every image inline and decodable, glyphs for every Korean label embedded."""
    page = path.read_text(encoding="utf-8")
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert all(base64.b64decode(s.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n" for s in sources)
    assert "http://" not in page and "https://" not in page
    font = re.search(r"url\(data:font/ttf;base64,([^)]+)\)", page)
    covered = TTFont(io.BytesIO(base64.b64decode(font.group(1)))).getBestCmap()
    assert all(ord(c) in covered for label in REFERENCE_LABELS for c in label)
    return page


@pytest.mark.slow
def test_compare_over_sentence_folds_tests_every_clip_once_per_seed(demo_corpora, tmp_path):
    corpus, out = demo_corpora["script"], tmp_path / "cmp"
    printed = compare("--data", str(corpus), "--out", str(out), "--models", "linear", "audio", "--seeds", "2",
                      "--folds", "3", "--split-by", "sentence", "--num_epochs", "1")  # fmt: skip
    n_clips = sum(len(pd.read_pickle(corpus / f"{s}.pkl")) for s in ("train", "dev", "test"))
    assert f"### test ({n_clips} clips)" in printed and "test_stt" not in printed
    tested = [pd.read_pickle(out / "folds" / f"fold{i}" / "test.pkl") for i in range(3)]
    assert sum(map(len, tested)) == n_clips
    for i, test in enumerate(tested):
        train = pd.read_pickle(out / "folds" / f"fold{i}" / "train.pkl")
        assert not set(test["Sentence"]) & set(train["Sentence"])

    summary = pd.read_csv(out / "comparison.csv")
    ensembles = summary["model"].str.endswith("(ensemble of 2)")
    assert set(summary["model"]) == {"linear", "audio", "linear (ensemble of 2)", "audio (ensemble of 2)"}
    assert (summary["runs"] == ensembles.map({True: 1, False: 2})).all()
    assert ((summary["ci_low"] <= summary["mean"]) & (summary["mean"] <= summary["ci_high"])).all()
    paired = summary.dropna(subset=["paired_p"])
    assert len(paired) == 3 and paired["paired_p"].between(0, 1).all()  # the other models' macro-F1
    assert (paired["paired_p_holm"] >= paired["paired_p"]).all() and paired["paired_p_holm"].max() <= 1
    # The model the others are tested against is chosen on dev, by the mean dev macro-F1 of its runs.
    on_dev = pd.read_csv(out / "results.csv").groupby("model")["dev_macro_f1"].mean()
    assert set(summary["model"]) - set(paired["model"]) == {on_dev.idxmax()}
    page = check_report(out / "report.html")
    assert "is the model best on dev (macro-F1" in page and "Learning curves" in page


def test_compare_tests_on_test_and_test_stt_and_writes_run_reports(demo_corpora, tmp_path):
    out = tmp_path / "cmp"
    printed = compare("--data", str(demo_corpora["script"]), "--out", str(out), "--models", "linear", "--seeds", "2")
    assert "### test (" in printed and "### test_stt (" in printed
    assert re.search(r"\| linear \| 2 \| \d+\.\d\d ± \d+\.\d\d \[\d+\.\d, \d+\.\d\]", printed)
    run_page = check_report(out / "runs" / "corpus" / "linear" / "seed1" / "report.html")
    assert "Learning curves" in run_page and "test_stt" in run_page

    # The ensemble row scores the class of highest mean probability over the seeds' own predictions.
    runs = [pd.read_csv(out / "runs" / "corpus" / "linear" / f"seed{s}" / "eval" / "test" / "predictions.csv") for s in (0, 1)]
    probabilities = sum(run[[f"p_{label}" for label in REFERENCE_LABELS]].to_numpy() for run in runs) / 2
    truth = runs[0]["true_value"].map(REFERENCE_LABELS.index)
    expected = classification_metrics(truth, probabilities.argmax(1), REFERENCE_LABELS)["macro_f1"]
    summary = pd.read_csv(out / "comparison.csv").query("test_set == 'test' and metric == 'macro_f1'").set_index("model")
    assert summary.loc["linear (ensemble of 2)", "mean"] == pytest.approx(expected, abs=1e-9)
    assert summary.loc["linear (ensemble of 2)", "runs"] == 1


def test_a_model_of_one_run_has_no_spread_over_seeds_in_comparison_csv():
    y_true = np.arange(14) % 7
    models = {"a": np.stack([y_true, (y_true + 1) % 7]), "a (ensemble of 2)": y_true[None]}
    rows, _, _ = _summarise("test", y_true, y_true, models, list(REFERENCE_LABELS), ("a", 0.5))
    std = {(row["model"], row["metric"]): row["std"] for row in rows}
    assert std[("a", "accuracy")] == pytest.approx(np.std([1, 0], ddof=1))
    assert std[("a (ensemble of 2)", "accuracy")] is None  # it was 0.0: as if the seeds agreed


def test_a_killed_comparison_resumes_keeping_finished_runs_and_ends_as_an_unbroken_one(demo_corpora, tmp_path):
    args = ["--data", str(demo_corpora["script"]), "--models", "linear", "audio", "--seeds", "1", "--num_epochs", "3",
            "--early_stop", "0"]  # fmt: skip
    compare(*args, "--out", str(tmp_path / "unbroken"))

    out = tmp_path / "killed"
    command = [sys.executable, "-m", "audiotext.cli", "compare", "--resample_rate", "8000", "--quiet", *args, "--out", str(out)]
    killed = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out / "runs" / "corpus" / "audio" / "seed0" / "resume.safetensors"
    deadline = time.monotonic() + 600
    while not checkpoint.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    killed.kill()
    assert killed.wait() == -signal.SIGKILL, "the comparison ended before its audio run wrote a checkpoint"
    linear_weights = out / "runs" / "corpus" / "linear" / "seed0" / "model.safetensors"
    written = linear_weights.stat().st_mtime_ns

    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 1 and again.stderr.count("\n") == 1
    assert f"{out} holds a comparison" in again.stderr and "--resume continues it" in again.stderr
    other = subprocess.run([*command[:-2], "--seeds", "2", "--out", str(out), "--resume"], cwd=ROOT, capture_output=True, text=True)
    assert other.returncode != 0 and "settings.seeds = [0] (now [0, 1])" in other.stderr
    # A flag none of these models reads is refused before the resume looks at the settings.
    other = subprocess.run([*command, "--modality_dropout", "0.2", "--resume"], cwd=ROOT, capture_output=True, text=True)
    assert other.returncode == 2 and "--modality_dropout: --models audio linear holds no fusing model" in other.stderr

    printed = compare(*args, "--out", str(out), "--resume")
    assert linear_weights.stat().st_mtime_ns == written  # kept, not trained again
    assert "linear" in printed and "audio" in printed
    for name in ("comparison.csv", "results.csv"):
        resumed, unbroken = pd.read_csv(out / name), pd.read_csv(tmp_path / "unbroken" / name)
        pd.testing.assert_frame_equal(resumed.drop(columns="run_dir", errors="ignore"),
                                      unbroken.drop(columns="run_dir", errors="ignore"))  # fmt: skip


def test_modality_dropout_is_a_share_per_fusing_model_and_none_for_the_others():
    settings = CompareSettings(labels=REFERENCE_LABELS)
    shares = {name: model_config(name, settings)[0].modality_dropout for name in ALL_MODELS}
    assert shares == {"linear": 0.0, "audio": 0.0, "text": 0.0, **MODALITY_DROPOUT}
    with pytest.raises(SettingError, match="modality dropout is for the fusing models .*, not audio"):
        CompareSettings(labels=REFERENCE_LABELS, modality_dropout={"audio": 0.2})
    with pytest.raises(SettingError, match=r"modality_dropout = 1.0: must be a share in \[0, 1\)"):
        CompareSettings(labels=REFERENCE_LABELS, modality_dropout={"mult": 1.0})
    with pytest.raises(SettingError, match="model.modality_dropout is not read by a comparison"):
        CompareSettings(labels=REFERENCE_LABELS, model=replace(settings.model, modality_dropout=0.5))


def test_the_moving_average_is_a_decay_per_model_and_none_for_the_others(cli_error):
    settings = CompareSettings(labels=REFERENCE_LABELS)
    decays = {name: model_config(name, settings)[1].ema for name in ALL_MODELS}
    assert decays == {**dict.fromkeys(ALL_MODELS, 0.0), **EMA} and EMA == {"mult": 0.995}
    with pytest.raises(SettingError, match=r"ema = 1.0: must be a share in \[0, 1\)"):
        CompareSettings(labels=REFERENCE_LABELS, ema={"audio": 1.0})
    with pytest.raises(SettingError, match="ema names models that do not exist: cnn"):
        CompareSettings(labels=REFERENCE_LABELS, ema={"cnn": 0.9})
    with pytest.raises(SettingError, match="train.ema is not read by a comparison"):
        CompareSettings(labels=REFERENCE_LABELS, train=replace(settings.train, ema=0.9))
    code, printed = cli_error("compare", "--data", "nowhere", "--ema", "1")  # the flag sets every model's decay
    assert code == 2 and "ema = 1.0: must be a share in [0, 1)" in printed


def test_a_model_listed_twice_is_refused(cli_error):
    # Its one run was reported as two seeds, and as an ensemble of two.
    code, printed = cli_error("compare", "--data", "nowhere", "--models", "linear", "mult", "linear", "MULT")
    assert code == 2 and printed == "error: models: linear, mult listed twice (mult, MULT, MulT and Transformer are one model)\n"


def test_resume_keeps_a_trained_text_encoder_and_its_runs_until_the_encoder_changes(demo_corpora, tmp_path):
    out = tmp_path / "cmp"
    args = ["--data", str(demo_corpora["script"]), "--out", str(out), "--models", "text", "--seeds", "1",
            "--num_epochs", "1", "--text_features", "encoder", "--pretrain_epochs", "1", "--pretrain_vocab", "200"]  # fmt: skip
    encoder_weights = out / "text" / "corpus" / "pretrained" / "model.safetensors"
    run_weights = out / "runs" / "corpus" / "text" / "seed0" / "model.safetensors"

    def written() -> tuple[int, int]:
        return encoder_weights.stat().st_mtime_ns, run_weights.stat().st_mtime_ns

    first = compare(*args)
    before = written()
    assert compare(*args, "--resume") == first and written() == before  # nothing trained again

    config = encoder_weights.parent / "config.json"
    config.write_text(config.read_text(encoding="utf-8") + "\n", encoding="utf-8")  # the encoder is not what it was
    compare(*args, "--resume")
    assert all(now != then for now, then in zip(written(), before))  # both trained again


def test_a_comparison_that_stopped_before_training_leaves_its_folder_to_the_next(demo_corpus, tmp_path):
    # Folds refused (too few speakers) after compare.json was written: the corrected command was
    # refused in that --out, and --resume named the changed setting.
    out = tmp_path / "out"
    (out / "folds" / "fold0").mkdir(parents=True)
    (out / "compare.json").write_text('{"settings": {"folds": 5}}', encoding="utf-8")
    settings = CompareSettings(labels=REFERENCE_LABELS, models=("linear",))
    for resume in (False, True):
        record = _claim(out, demo_corpus, settings, resume=resume, overwrite=False)
        assert json.loads((out / "compare.json").read_text(encoding="utf-8"))["settings"] == record["settings"]
        assert not (out / "folds").exists()
    (out / "runs").mkdir()  # a comparison that trained is kept
    with pytest.raises(FileExistsError, match="holds a comparison"):
        _claim(out, demo_corpus, replace(settings, seeds=(0, 1)), resume=False, overwrite=False)
    mine = tmp_path / "mine"  # a folds/ folder with no compare.json is no comparison's: kept
    (mine / "folds").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="holds a comparison"):
        _claim(mine, demo_corpus, settings, resume=False, overwrite=False)
    assert (mine / "folds").is_dir()


def test_a_recognised_clip_is_resampled_with_the_sentence_its_test_clip_reads(demo_corpora, tmp_path):
    # Grouped by what the recogniser heard, the three voices of a sentence were nearly independent clips.
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pd.read_pickle(demo_corpora["script"] / "test.pkl")[:60].to_pickle(corpus / "test.pkl")  # our own file
    shutil.copyfile(demo_corpora["script"] / "test_stt.pkl", corpus / "test_stt.pkl")
    heard = load_any_split(corpus, "test_stt", REFERENCE_LABELS, 48000)
    said = load_any_split(demo_corpora["script"], "test", REFERENCE_LABELS, 48000).sentences
    spoken = spoken_sentences(corpus, heard, REFERENCE_LABELS, 48000)
    assert spoken[:60] == said[:60] != heard.sentences[:60]
    assert spoken[60:] == heard.sentences[60:]  # clips the test set no longer holds: what was heard


@pytest.mark.parametrize("flags, refused", [
    (["--split-by", "sentence"], "--split-by: it says what never crosses folds: give --folds"),
    (["--cross_fit", "2"], "--cross_fit: it folds the fine-tuning: give --finetune_epochs"),
    (["--pretrain_epochs", "2"], "--text_features ngrams no model reads a text encoder's states"),
    (["--models", "linear", "audio", "--wide"], "--wide: --models audio linear holds no fusing model"),
    (["--models", "audio", "--transcript_noise", "0.1"], "--transcript_noise: --models audio reads no text"),
    (["--models", "linear", "--early_stop", "3"], "--early_stop: the linear model stops after 10 epochs"),
    # The text model averages its token states: it said 'pools nothing over time'.
    (["--models", "text", "--merge_how", "last"], "--merge_how: --models text: the linear model pools statistics"),
    # compare.json recorded the encoder's digest, and the pre-training never loaded it.
    (["--text_features", "encoder", "--encoder", ".", "--pretrain_epochs", "2", "--pretrain_vocab", "500"],
     "--encoder: --pretrain_vocab pre-trains a new BERT from scratch"),
])  # fmt: skip
def test_a_flag_no_listed_model_reads_is_refused(cli_error, flags, refused):
    # Each was recorded in compare.json and changed nothing (a pre-training ran, its encoder read by none).
    code, printed = cli_error("compare", "--data", "nowhere", *flags)
    assert code == 2 and refused in printed and printed.count("\n") == 1, printed
