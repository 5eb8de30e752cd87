"""The catalogue of bad inputs (README, "What bad input gets"): each one, through the command line
or the API a user would call, gets its own error naming the file, row, column or flag (exit code 2
for a setting, 1 for data), or works as documented. Nothing half-written is left behind."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from audiotext.config import REFERENCE_LABELS
from audiotext.errors import AudiotextError, DataError, SettingError
from audiotext.inference.recognizer import EmotionRecognizer

RATE = 48000
TRAIN_FAST = ["--model", "audio", "--layers", "1", "--resample_rate", "8000", "--num_epochs", "1", "--quiet"]


@pytest.fixture(scope="module")
def clips(demo_corpus) -> list[np.ndarray]:
    """Twelve test clips of the demo corpus (int16 at 48 kHz), two per label for the first six labels."""
    frame = pd.read_pickle(demo_corpus / "test.pkl")
    return [a for label in REFERENCE_LABELS[:6] for a in frame.audio[frame.Emotion == label][:2]]


def write_manifest(folder: Path, clips: list[np.ndarray], rows: list[dict] | None = None) -> Path:
    """A manifest of `clips` as WAV files, 6 labels x 2 clips, plus `rows` appended as given."""
    folder.mkdir(parents=True, exist_ok=True)
    table = []
    for i, clip in enumerate(clips):
        sf.write(folder / f"c{i}.wav", clip, RATE, subtype="PCM_16")
        table.append({"audio": f"c{i}.wav", "text": f"문장 {i} 입니다", "label": REFERENCE_LABELS[i // 2],
                      "speaker": f"s{i % 2}", "start": "", "end": ""})  # fmt: skip
    table += rows or []
    pd.DataFrame(table).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


def prepare(cli_error, manifest: Path, out: Path, *flags: str) -> tuple[int, str]:
    return cli_error("prepare", "manifest", "--manifest", manifest, "--out", out, "--min_label_clips", "2", *flags)


def rejects(out: Path) -> dict[int, str]:
    table = pd.read_csv(out / "rejects.csv")
    return dict(zip(table["row"], table["reason"]))


def run_prepare(manifest: Path, out: Path, *flags: str):
    from audiotext.cli import main

    main(["prepare", "manifest", "--manifest", str(manifest), "--out", str(out), "--min_label_clips", "2",
          "--ratios", "0.5", "0.25", "0.25", "--quiet", *flags])  # fmt: skip
    return pd.read_csv(out / "manifest.csv")


# --- Data that lies ---------------------------------------------------------------------------


def test_duplicate_rows_and_identical_samples_are_kept_once(clips, tmp_path):
    sf.write(tmp_path / "copy.wav", clips[0], RATE, subtype="PCM_16")
    # A copy padded with 10 ms of silence has the same features (they trim edge zeros): it went unseen.
    sf.write(tmp_path / "padded.wav", np.concatenate([np.zeros(480, np.int16), clips[1]]), RATE, subtype="PCM_16")
    manifest = write_manifest(tmp_path, clips, [
        {"audio": "c3.wav", "text": "다시", "label": REFERENCE_LABELS[1], "speaker": "s1", "start": "", "end": ""},
        {"audio": "copy.wav", "text": "복사", "label": REFERENCE_LABELS[0], "speaker": "s0", "start": "", "end": ""},
        {"audio": "padded.wav", "text": "여백", "label": REFERENCE_LABELS[0], "speaker": "s1", "start": "", "end": ""},
    ])  # fmt: skip
    prepared = run_prepare(manifest, tmp_path / "out")
    reasons = rejects(tmp_path / "out")
    assert reasons[13].startswith("the same file and segment as row 4")
    assert reasons[14].startswith("the same samples as row 1")
    assert reasons[15].startswith("the same samples as row 2")
    assert len(prepared) == 12


def test_a_segment_overlapping_a_kept_segment_of_its_file_is_left_out(clips, tmp_path):
    # Two overlapping segments of one recording, split by clip, could put the same speech in train and test.
    sf.write(tmp_path / "long.wav", np.concatenate(clips[:4]), RATE, subtype="PCM_16")
    segments = [("0", "1"), ("1", "2"), ("1.5", "2.5"), ("", ""), ("", "0.5"), ("2.5", "")]
    manifest = write_manifest(tmp_path, clips, [
        {"audio": "long.wav", "text": f"구간 {i}", "label": REFERENCE_LABELS[0], "speaker": "s0", "start": start, "end": end}
        for i, (start, end) in enumerate(segments)
    ])  # fmt: skip
    prepared = run_prepare(manifest, tmp_path / "out")
    reasons = rejects(tmp_path / "out")
    long = tmp_path / "long.wav"
    assert reasons == {
        15: f"its segment (1.5 s to 2.5 s) overlaps that of row 14 ({long}) (1 s to 2 s): two splits could share that audio",
        16: f"its segment (0 s to the end) overlaps that of row 13 ({long}) (0 s to 1 s): two splits could share that audio",
        17: f"its segment (0 s to 0.5 s) overlaps that of row 13 ({long}) (0 s to 1 s): two splits could share that audio",
    }
    assert sorted(prepared["text"][prepared["text"].str.startswith("구간")]) == ["구간 0", "구간 1", "구간 5"]


def test_a_rerun_of_prepare_decodes_a_file_changed_since_again(clips, tmp_path):
    manifest = write_manifest(tmp_path, clips)
    run_prepare(manifest, tmp_path / "out")
    sf.write(tmp_path / "c0.wav", clips[5], RATE, subtype="PCM_16")  # another recording under the same name
    prepared = run_prepare(manifest, tmp_path / "out")  # the same job: it resumes
    first = prepared[prepared["audio"].str.startswith("audio/c0-")]["audio"].item()
    assert np.array_equal(sf.read(tmp_path / "out" / first, dtype="int16")[0], clips[5])  # not the old clip


def test_a_rerun_of_prepare_decodes_a_damaged_cached_clip_again(clips, tmp_path):
    manifest = write_manifest(tmp_path, clips)
    first = run_prepare(manifest, tmp_path / "out")["audio"][0]
    (tmp_path / "out" / first).write_bytes(b"not a flac")  # a disk error, a copy that stopped (a traceback before)
    prepared = run_prepare(manifest, tmp_path / "out")
    source = int(re.match(r"audio/c(\d+)-", first)[1])
    assert np.array_equal(sf.read(tmp_path / "out" / first, dtype="int16")[0], clips[source])
    assert len(prepared) == len(clips)


def test_split_names_that_differ_only_in_case_are_refused(clips, tmp_path, cli_error):
    from audiotext.data.manifest import ManifestError, load_manifest_split

    table = pd.read_csv(write_manifest(tmp_path, clips))
    table["split"] = ["train"] * 8 + ["dev", "test", "Test", "test"]  # Test.pkl was written beside test.pkl
    table.to_csv(tmp_path / "cased.csv", index=False)
    code, printed = prepare(cli_error, tmp_path / "cased.csv", tmp_path / "out", "--split-by", "manifest")
    assert code == 1 and "cased.csv: row 11, column 'split' is 'Test', but row 10's is 'test'" in printed
    assert not (tmp_path / "out").exists()
    with pytest.raises(ManifestError, match="differ only in case"):  # a manifest trained on: its Test rows were left out
        load_manifest_split(tmp_path / "cased.csv", "test", None, RATE, with_audio=False)


def test_a_label_typo_is_refused_and_a_decomposed_label_is_the_same_class(clips, tmp_path, cli_error):
    typo = {"audio": "c0.wav", "text": "x", "label": "행보", "speaker": "s0", "start": "0", "end": "0.5"}
    code, printed = prepare(cli_error, write_manifest(tmp_path, clips, [typo]), tmp_path / "out")
    assert code == 1 and "label(s) used by fewer than 2 clips, probably typos: '행보': 1 clip(s), row(s) 13" in printed
    assert not (tmp_path / "out" / "manifest.csv").exists()

    table = pd.read_csv(tmp_path / "manifest.csv").iloc[:12]
    table.loc[0, "label"] = unicodedata.normalize("NFD", table.loc[0, "label"])
    table.to_csv(tmp_path / "nfd.csv", index=False)
    prepared = run_prepare(tmp_path / "nfd.csv", tmp_path / "nfd")
    assert json.loads((tmp_path / "nfd" / "labels.json").read_text()) == sorted(REFERENCE_LABELS[:6])
    assert (prepared["label"] == REFERENCE_LABELS[0]).sum() == 2


def test_a_named_label_that_no_clip_has_is_said(clips, tmp_path):
    from audiotext.data.prepare import prepare_manifest

    report = prepare_manifest(write_manifest(tmp_path, clips), tmp_path / "out", labels=[*REFERENCE_LABELS[:6], "calm"],
                              ratios=(0.5, 0.25, 0.25), progress=False)  # fmt: skip
    assert report.summary().endswith("no clip has the label(s) 'calm'")


def test_a_truncated_wav_and_a_segment_past_the_end_are_rejected_with_the_reason(clips, tmp_path):
    manifest = write_manifest(tmp_path, clips, [
        {"audio": "cut.wav", "text": "잘림", "label": REFERENCE_LABELS[0], "speaker": "s0", "start": "", "end": ""},
        {"audio": "c5.wav", "text": "넘침", "label": REFERENCE_LABELS[2], "speaker": "s1", "start": "0.5", "end": "60"},
        {"audio": "c6.wav", "text": "늦음", "label": REFERENCE_LABELS[3], "speaker": "s0", "start": "20", "end": ""},
    ])  # fmt: skip
    whole = (tmp_path / "c1.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(whole[: len(whole) // 2])
    run_prepare(manifest, tmp_path / "out")
    reasons = rejects(tmp_path / "out")
    assert reasons[13].startswith("truncated: its header promises")
    assert reasons[14].startswith("segment end 60.0 s is past the end of the file")
    assert reasons[15].endswith("no audio decoded from 20.0 s to the end")


def test_prepare_resumes_the_same_job_and_refuses_another(clips, tmp_path, cli_error):
    manifest = write_manifest(tmp_path, clips)
    run_prepare(manifest, tmp_path / "out")
    run_prepare(manifest, tmp_path / "out")  # the same job: resumed, not refused
    code, printed = prepare(cli_error, manifest, tmp_path / "out", "--seed", "1")
    assert code == 1 and re.search(r"holds another job \(.*seed.* differ\)", printed)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    code, printed = prepare(cli_error, manifest, tmp_path / "other")
    assert code == 1 and "holds other files" in printed and sorted(p.name for p in (tmp_path / "other").iterdir()) == ["notes.txt"]
    (tmp_path / "out" / "prepare.json").write_text("{edited", encoding="utf-8")
    code, printed = prepare(cli_error, manifest, tmp_path / "out")
    assert code == 1 and "prepare.json: not the record of a prepare job (Expecting property name" in printed
    code, printed = prepare(cli_error, manifest, tmp_path / "other" / "notes.txt")
    assert code == 1 and "notes.txt is a file, not a folder" in printed


def test_a_failed_prepare_leaves_its_folder_to_the_next_job(clips, tmp_path, cli_error):
    # A strict run that failed kept its folder for itself: the fixed manifest was "another job".
    missing = {"audio": "gone.wav", "text": "없음", "label": REFERENCE_LABELS[0], "speaker": "s0", "start": "", "end": ""}
    manifest = write_manifest(tmp_path, clips, [missing])
    table = pd.read_csv(manifest, keep_default_na=False, dtype=str)
    pd.concat([table.iloc[12:], table.iloc[:12]]).to_csv(manifest, index=False)  # the missing file first
    code, printed = prepare(cli_error, manifest, tmp_path / "out", "--strict")
    assert code == 1 and "strict mode, and an input was rejected" in printed and "gone.wav (row 1)" in printed
    assert list(rejects(tmp_path / "out")) == [1] and not list((tmp_path / "out").rglob("*.flac"))  # it stopped there
    table.iloc[:12].to_csv(manifest, index=False)
    assert len(run_prepare(manifest, tmp_path / "out", "--strict")) == 12
    code, printed = prepare(cli_error, manifest, tmp_path / "out", "--seed", "1")  # a finished job stays
    assert code == 1 and "holds another job" in printed


def test_split_settings_are_checked_before_any_clip_is_decoded(clips, tmp_path, cli_error):
    manifest = write_manifest(tmp_path, clips)
    code, printed = prepare(cli_error, manifest, tmp_path / "nan", "--ratios", "nan", "0.1", "0.1")
    assert code == 1 and "ratios must be three finite non-negative shares" in printed  # NaN gave every clip to test
    code, printed = prepare(cli_error, manifest, tmp_path / "few", "--split-by", "speaker")
    assert code == 1 and "needs at least 3 speakers, got 2" in printed
    # Rows without a speaker passed for a third speaker, dealt whole to one split.
    table = pd.read_csv(manifest, keep_default_na=False)
    table.loc[8:, "speaker"] = ""
    table.to_csv(tmp_path / "blank.csv", index=False)
    code, printed = prepare(cli_error, tmp_path / "blank.csv", tmp_path / "blank", "--split-by", "speaker")
    assert code == 1 and "a speaker split needs each clip's speaker; 4 have none (row 9, 10, 11, 12)" in printed
    assert not (tmp_path / "nan").exists() and not (tmp_path / "few").exists() and not (tmp_path / "blank").exists()


def test_a_split_name_that_is_a_path_is_refused(clips, tmp_path, cli_error):
    manifest = write_manifest(tmp_path / "corpus", clips)
    table = pd.read_csv(manifest, keep_default_na=False)
    table["split"] = ["train"] * 8 + ["dev"] * 2 + ["test", "../escaped"]
    table.to_csv(manifest, index=False)
    code, printed = prepare(cli_error, manifest, tmp_path / "corpus" / "out", "--split-by", "manifest")
    assert code == 1 and "row 12, column 'split' is '../escaped'" in printed
    assert not (tmp_path / "corpus" / "escaped.pkl").exists() and not (tmp_path / "corpus" / "out").exists()


def test_a_silent_clip_is_rejected_by_prepare(clips, tmp_path):
    sf.write(tmp_path / "silence.wav", np.zeros(RATE, np.int16), RATE, subtype="PCM_16")
    manifest = write_manifest(tmp_path, clips, [
        {"audio": "silence.wav", "text": "조용", "label": REFERENCE_LABELS[0], "speaker": "s0", "start": "", "end": ""},
    ])  # fmt: skip
    run_prepare(manifest, tmp_path / "out")
    assert rejects(tmp_path / "out")[13] == "silent: every sample is zero"


def test_a_stray_quote_in_a_manifest_is_refused_not_merged_into_other_rows(clips, tmp_path, cli_error):
    # pandas read a field starting with a quote as a quoted field running to the next quote: rows
    # 5 to 7 became one row with row 7's label, and the run went on without a word.
    table = pd.read_csv(write_manifest(tmp_path, clips), keep_default_na=False, dtype=str)
    table.loc[4, "text"], table.loc[6, "text"] = '"Quiet', 'well" ok'
    lines = ["\t".join(table.columns)] + ["\t".join(row) for row in table.itertuples(index=False)]
    (tmp_path / "clips.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, printed = prepare(cli_error, tmp_path / "clips.tsv", tmp_path / "out")
    assert code == 1 and "clips.tsv: row 5, column 'text' runs over several lines" in printed
    from audiotext.data.manifest import read_manifest

    notes = pd.read_csv(tmp_path / "manifest.csv", keep_default_na=False, dtype=str).assign(notes="one\ntwo")
    notes.to_csv(tmp_path / "notes.csv", index=False)  # a quoted line break in a column that is not read
    assert len(read_manifest(tmp_path / "notes.csv")) == 12


@pytest.mark.parametrize("content, message", [
    ("audio,text,label\nc0.wav,행복,기쁨\n".encode("cp949"), "not UTF-8 text"),
    (b"audio,text,label\nc0.wav,a,b\nc1.wav,a,b,extra\n", "not a well-formed table"),
    (b"audio,text,label\nc0.wav,a,b,extra\n", "the rows hold more fields than the header names"),
    (b"", "the file is empty"),
    (b"audio,text,label\n", "no rows"),
])  # fmt: skip
def test_an_unreadable_manifest_is_named(tmp_path, cli_error, content, message):
    (tmp_path / "clips.csv").write_bytes(content)
    code, printed = prepare(cli_error, tmp_path / "clips.csv", tmp_path / "out")
    assert code == 1 and printed.startswith(f"error: {tmp_path / 'clips.csv'}: {message}") and printed.count("\n") == 1


def test_json_lines_may_hold_blank_lines_and_rows_keep_their_line_numbers(tmp_path):
    from audiotext.data.manifest import read_manifest

    rows = [json.dumps({"audio": f"c{i}.wav", "text": "a", "label": "b"}) for i in range(2)]
    (tmp_path / "clips.jsonl").write_text(f"{rows[0]}\n\n{rows[1]}\n\n", encoding="utf-8")
    assert read_manifest(tmp_path / "clips.jsonl")["row"].tolist() == [1, 3]
    # A byte order mark, as Windows editors write, made row 1 "not valid JSON" (a CSV read past it).
    (tmp_path / "bom.jsonl").write_text(f"\ufeff{rows[0]}\n", encoding="utf-8")
    assert read_manifest(tmp_path / "bom.jsonl")["audio"].tolist() == ["c0.wav"]


def test_speaker_ids_are_numbers_only_when_every_one_is_a_plain_int64():
    from audiotext.data.manifest import speaker_ids

    assert speaker_ids(["7", "12", "", "-3"]) == [7, 12, -1, -3]
    assert speaker_ids(["007", "7"]) == [0, 1]  # two speakers, not one
    assert speaker_ids(["12345678901234567890", "1"]) == [1, 0]  # past int64: names (it overflowed)
    assert speaker_ids(["²", "3"]) == [1, 0]  # a digit, but no number int() reads


def test_a_transcript_without_letters_is_rejected_and_other_scripts_are_kept(clips, tmp_path):
    manifest = write_manifest(tmp_path, clips, [
        {"audio": "c0.wav", "text": "😀 …", "label": REFERENCE_LABELS[0], "speaker": "s0", "start": "0", "end": "1"},
    ])  # fmt: skip
    table = pd.read_csv(manifest, keep_default_na=False)
    table.loc[1, "text"], table.loc[2, "text"] = "Привет, мир", "你好，世界"
    table.to_csv(manifest, index=False)
    prepared = run_prepare(manifest, tmp_path / "out")
    assert rejects(tmp_path / "out")[13].startswith("the transcript '😀 …' has no letters or digits")
    assert {"Привет, мир", "你好，世界"} <= set(prepared["text"])


def test_a_repeated_label_is_refused_as_a_setting(demo_corpus, tmp_path, cli_error):
    code, printed = cli_error("train", "--data_path", demo_corpus, "--output_dir", tmp_path, "--labels", "a,b,a")
    assert (code, printed.strip()) == (2, "error: labels = ['a', 'b', 'a']: a is listed twice")


@pytest.mark.parametrize(
    "column, value, message",
    [("audio", "missing.wav", "unreadable path"), ("label", "", "unknown label ''"), ("start", "soon", "column 'start' is not a number of seconds")],
)  # fmt: skip
def test_missing_files_missing_labels_and_wrong_dtypes_name_the_row(clips, tmp_path, cli_error, column, value, message):
    manifest = write_manifest(tmp_path, clips)
    table = pd.read_csv(manifest, keep_default_na=False, dtype=str)
    table.loc[3, column] = value
    table.to_csv(manifest, index=False)
    code, printed = prepare(cli_error, manifest, tmp_path / "out", "--strict", "--labels", ",".join(REFERENCE_LABELS[:6]))
    assert code == 1 and message in printed and ("row 4" in printed or "(row 4)" in printed), printed


def test_wrong_columns_are_named(clips, tmp_path, cli_error):
    manifest = write_manifest(tmp_path, clips)
    pd.read_csv(manifest).rename(columns={"text": "transcript"}).to_csv(manifest, index=False)
    code, printed = prepare(cli_error, manifest, tmp_path / "out")
    assert code == 1 and "manifest.csv: missing column(s) text" in printed


# --- Silent wrong results ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, message",
    [(["--max_len_for_audio", "2"], "max_len_for_audio = 2: must be at least 3 frames"),  # a traceback in training
     (["--resample_rate", "16"], "resample_rate = 16: must be at least 1000 Hz (a rate given in kHz?)"),
     (["--n_mfcc", "0"], "n_mfcc = 0: must be in 1..n_mels (128)"),
     (["--optim", "Adamm"], "optim = 'Adamm': not a torch.optim optimizer"),
     (["--name", "../../x"], "name = '../../x': must be a plain folder name"),
     (["--lr", "-1"], "lr = -1.0: must be positive"),
     (["--ema", "1"], "ema = 1.0: must be a share in [0, 1)"),
     (["--optim", "LBFGS"], "optim = 'LBFGS': not supported (its step needs a closure)"),  # a traceback at the first step
     (["--seed", "-1"], "seed = -1: must be in 0..2**32-1"),
     (["--resume", "--overwrite"], "--resume continues a run and --overwrite starts it again")],
)  # fmt: skip
def test_bad_settings_are_refused_before_any_feature_is_computed(demo_corpus, tmp_path, cli_error, flags, message):
    code, printed = cli_error("train", "--data_path", demo_corpus, "--output_dir", tmp_path, "--name", "r", *flags)
    assert printed.startswith("error: " + message) and printed.count("\n") == 1, printed
    assert code == 2
    assert not any(tmp_path.iterdir())  # nothing written: not even a run folder


def test_a_run_that_stopped_before_its_config_is_started_again(demo_corpus, tmp_path, cli_error):
    from audiotext.training.run_folder import claim_run_folder

    # Character n-grams are fitted before the features, the config saved after them: a run whose
    # data was refused (or that was stopped) in between left a folder that --resume and --overwrite refused.
    early = tmp_path / "early"
    early.mkdir()
    (early / "char_ngrams.json").write_text("{}", encoding="utf-8")
    assert claim_run_folder(early, None, resume=True) == early and not early.exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "char_ngrams.json").write_text("{}", encoding="utf-8")
    (tmp_path / "mine" / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(FileExistsError, match="not a run folder"):
        claim_run_folder(tmp_path / "mine", None, overwrite=True)


def test_a_diverged_run_stops_unfinished(demo_corpus, tmp_path, cli_error):
    code, printed = cli_error("train", "--data_path", demo_corpus, "--output_dir", tmp_path, "--name", "r", *TRAIN_FAST,
                              "--lr", "1e6", "--clip", "0")  # fmt: skip
    assert code == 1 and "r: training diverged in epoch 1 (train loss nan)" in printed and printed.count("\n") == 1
    assert not (tmp_path / "r" / "finished.json").exists()  # NaN weights were marked finished


def test_test_finds_every_split_first_and_leaves_model_folders_alone(trained_runs, demo_corpus, tmp_path, cli_error):
    run = trained_copy(trained_runs, tmp_path)
    code, printed = cli_error("test", "--run_dir", run, "--data_path", demo_corpus, "--split", "test", "nosuch", "--quiet")
    assert code == 1 and printed == f"error: {demo_corpus / 'nosuch.pkl'}: no such split file\n"
    assert not (run / "eval").exists()  # test's results were written before, beside an older report
    from audiotext.inference.export import export_model

    model = export_model(run, tmp_path / "model")
    code, printed = cli_error("test", "--run_dir", model, "--data_path", demo_corpus, "--quiet")
    assert code == 2 and "is a model folder (audiotext export), where nothing may be added" in printed
    assert not (model / "eval").exists()
    # What was tested is recorded (the report said the run's own data for figures of another corpus).
    tested = json.loads((trained_runs["audio"] / "eval" / "test" / "metrics.json").read_text(encoding="utf-8"))
    assert Path(tested["data"]) == Path(demo_corpus)
    from audiotext.cli import main

    # Two splits of one name were both written to eval/test, the last over the first, without a word.
    (tmp_path / "other").mkdir()
    shutil.copy(demo_corpus / "dev.pkl", tmp_path / "other" / "test.pkl")
    code, printed = cli_error("test", "--run_dir", run, "--data_path", demo_corpus, "--split", "test",
                              tmp_path / "other" / "test.pkl", "--quiet")  # fmt: skip
    assert code == 2 and "--split: 2 splits named 'test' would be written to one folder" in printed
    assert not (run / "eval").exists()
    # A later split with a label the model does not know: the first split's eval/ was written before it failed.
    unknown = pd.read_pickle(demo_corpus / "dev.pkl")
    unknown.loc[0, "Emotion"] = "기쁨"
    unknown.to_pickle(tmp_path / "other" / "unknown.pkl")
    code, printed = cli_error("test", "--run_dir", run, "--data_path", demo_corpus, "--split", "test",
                              tmp_path / "other" / "unknown.pkl", "--quiet")  # fmt: skip
    assert code == 1 and "unknown label '기쁨'" in printed and printed.count("\n") == 1
    assert not (run / "eval").exists()
    code, printed = cli_error("text", "test", "--model", tmp_path / "classifier", "--data_path", demo_corpus, "--split",
                              "test", tmp_path / "other" / "test.pkl")  # fmt: skip
    assert code == 2 and "--split: 2 splits named 'test' would be written to one folder" in printed  # text test too
    main(["test", "--run_dir", str(run), "--split", str(tmp_path / "other" / "test.pkl"), "--quiet"])
    tested = json.loads((run / "eval" / "test" / "metrics.json").read_text(encoding="utf-8"))
    assert Path(tested["data"]) == tmp_path / "other" / "test.pkl"  # the file tested, not the run's data
    # A manifest of several splits given as one split scored its training rows as test clips.
    table = pd.DataFrame({"audio": ["a.wav", "b.wav"], "text": ["가", "나"], "label": REFERENCE_LABELS[:2],
                          "split": ["train", "test"]})  # fmt: skip
    table.to_csv(tmp_path / "all.csv", index=False)
    code, printed = cli_error("test", "--run_dir", run, "--split", tmp_path / "all.csv", "--quiet")
    assert code == 1 and f"all.csv holds the splits 'test', 'train': name one (--data_path {tmp_path / 'all.csv'} --split NAME)" in printed


def test_an_output_dir_under_a_file_or_a_results_csv_that_is_a_folder_is_refused_before_training(
    demo_corpus, tmp_path, cli_error
):
    (tmp_path / "file").write_text("not a folder", encoding="utf-8")
    code, printed = cli_error("train", "--data_path", demo_corpus, "--output_dir", tmp_path / "file" / "runs", *TRAIN_FAST)
    assert code == 2 and printed.startswith(f"error: --output_dir {tmp_path / 'file' / 'runs' / 'results.csv'}: ")
    # The whole run trained and was marked finished, then `[Errno 21] Is a directory` named no flag.
    code, printed = cli_error("train", "--data_path", demo_corpus, "--output_dir", tmp_path / "runs", *TRAIN_FAST,
                              "--results_csv", tmp_path)  # fmt: skip
    assert code == 2 and printed == f"error: --results_csv {tmp_path}: is a folder; name the file to write\n"
    assert not (tmp_path / "runs").exists()


def test_demo_commands_refuse_a_users_corpus_and_zero_seeds(tmp_path, cli_error):
    mine = tmp_path / "data"
    mine.mkdir()
    (mine / "train.pkl").write_bytes(b"my own corpus")  # demo-corpus --out data replaced it
    code, printed = cli_error("demo-corpus", "--out", mine, "--speakers", "1")
    assert code == 1 and "holds split pickles that are not a demo corpus" in printed
    assert (mine / "train.pkl").read_bytes() == b"my own corpus"
    code, printed = cli_error("demo", "--out", tmp_path / "demo", "--seeds", "0")  # it ran the default demo
    assert code == 2 and printed == "error: --seeds must be at least 1, got 0\n" and not (tmp_path / "demo").exists()


@pytest.mark.parametrize("dtype, message", [(np.float64, "float samples must lie in [-1, 1]"),
                                            (np.int64, "int64 samples must use int64's range")])
def test_int16_values_stored_as_floats_or_wider_integers_are_refused(demo_corpus, tmp_path, cli_error, dtype, message):
    shutil.copytree(demo_corpus, tmp_path / "data")
    train = pd.read_pickle(tmp_path / "data" / "train.pkl")
    train["audio"] = [a.astype(dtype) for a in train["audio"]]  # int16 values, scaled as another type's would be
    train.to_pickle(tmp_path / "data" / "train.pkl")
    code, printed = cli_error("train", "--data_path", tmp_path / "data", "--output_dir", tmp_path / "runs", *TRAIN_FAST)
    assert code == 1 and f"train.pkl: row 0: column 'audio': {message}" in printed, printed


def trained_copy(trained_runs, tmp_path: Path) -> Path:
    run = tmp_path / "audio"
    shutil.copytree(trained_runs["audio"], run)
    shutil.rmtree(run / "eval")
    return run


@pytest.mark.parametrize(
    "spoil, message",
    [("nan", "holds non-finite values (NaN or inf)"),
     ("corrupt", "model.safetensors: not a readable safetensors file"),
     ("labels", "trained with labels = "),
     ("sample_rate", "trained with audio = "),
     ("layers", "trained with model.layers = 1 (now 2) in config.json"),
     ("merge_how", "trained with model.merge_how = \"average\" (now \"stats\") in config.json"),
     ("attn_mask", "trained with model.attn_mask = true (now false) in config.json"),  # the same shapes
     ("num_heads", "trained with model.num_heads = 5 (now 4) in config.json"),
     ("extra_tensor", "tensor 'extra' (1 in all) is not part of the 'audio' model"),
     ("no_dims", "no 'dims' (model widths)"),
     ("max_len_for_audio", "config.json: max_len_for_audio = 2: must be at least 3 frames"),  # exit 2, no file named
     ],
)  # fmt: skip
def test_a_spoilt_run_is_refused_by_test_naming_the_file(trained_runs, demo_corpus, tmp_path, cli_error, spoil, message):
    run = trained_copy(trained_runs, tmp_path)
    weights, config = run / "model.safetensors", run / "config.json"
    if spoil == "nan":
        state = load_file(weights)
        next(t for t in state.values() if t.is_floating_point()).view(-1)[0] = float("nan")
        save_file(state, weights)
    elif spoil == "corrupt":
        weights.write_bytes(b"\xff" * 64)
    elif spoil == "extra_tensor":
        with safe_open(str(weights), framework="pt") as stored:
            metadata, state = stored.metadata(), {name: stored.get_tensor(name) for name in stored.keys()}
        save_file({**state, "extra": torch.zeros(1)}, weights, metadata=metadata)  # the facts still agree
    else:
        stored = json.loads(config.read_text(encoding="utf-8"))
        if spoil == "labels":
            stored["labels"] = stored["labels"][::-1]  # the same size, another order
        elif spoil == "sample_rate":
            stored["audio"]["sample_rate"] = 16000
        elif spoil == "no_dims":
            del stored["dims"]
        elif spoil == "max_len_for_audio":  # what an earlier audiotext accepted
            stored["audio"]["max_len_for_audio"] = 2
        else:
            stored["model"][spoil] = {"layers": 2, "merge_how": "stats", "attn_mask": False, "num_heads": 4}[spoil]
        config.write_text(json.dumps(stored, ensure_ascii=False), encoding="utf-8")
    code, printed = cli_error("test", "--run_dir", run, "--data_path", demo_corpus, "--quiet")
    assert code == 1 and message in printed and printed.count("\n") == 1, printed
    assert not (run / "eval").exists()


def test_weights_of_another_run_or_a_changed_ngram_file_are_refused(trained_runs, tmp_path):
    from audiotext.models.checkpoint import load_run

    # The same model's weights from another seed, or n-grams changed beside them, loaded and answered wrongly.
    other_seed = Path(shutil.copytree(trained_runs["linear"], tmp_path / "other_seed"))
    config = json.loads((other_seed / "config.json").read_text(encoding="utf-8"))
    config["train"]["seed"] += 1
    (other_seed / "config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(AudiotextError, match=r"these weights are of another run \(config.json is of .*'seed'"):
        load_run(other_seed)
    ngrams = json.loads((trained_runs["linear"] / "char_ngrams.json").read_text(encoding="utf-8"))
    changed = Path(shutil.copytree(trained_runs["linear"], tmp_path / "changed"))
    vocabulary = ngrams["vocabulary"]
    first, second = list(vocabulary)[:2]
    vocabulary[first], vocabulary[second] = vocabulary[second], vocabulary[first]  # same size, two columns swapped
    (changed / "char_ngrams.json").write_text(json.dumps(ngrams, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(AudiotextError, match="char_ngrams.json has changed since"):
        load_run(changed)
    ngrams["vocabulary"] = {k: v for k, v in vocabulary.items() if v < len(vocabulary) - 1}
    ngrams["idf"] = ngrams["idf"][:-1]
    (changed / "char_ngrams.json").write_text(json.dumps(ngrams, ensure_ascii=False), encoding="utf-8")
    with safe_open(changed / "model.safetensors", framework="pt") as stored:  # weights saved before digests
        facts, state = json.loads(stored.metadata()["audiotext"]), {k: stored.get_tensor(k) for k in stored.keys()}
    del facts["ngrams"]
    save_file(state, changed / "model.safetensors", metadata={"audiotext": json.dumps(facts, ensure_ascii=False)})
    with pytest.raises(AudiotextError, match="n-grams, but the weights read .*: the n-grams of another run"):
        load_run(changed)  # a traceback from the forward pass before


def test_a_changed_text_encoder_or_text_setting_of_a_run_is_refused(trained_runs, tmp_path):
    from audiotext.features.text import default_encoder_path
    from audiotext.models.checkpoint import load_run

    # `text finetune --out ENC --overwrite` after training on ENC: the run read other states without a word.
    run, encoder = tmp_path / "mult", tmp_path / "encoder"
    shutil.copytree(trained_runs["mult"], run)
    shutil.copytree(default_encoder_path(), encoder)  # the packaged MiniLM the run was trained on, as a folder
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    config["text"]["encoder"] = str(encoder)
    (run / "config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    assert load_run(run)[0].text.encoder == str(encoder)  # the same files: the same encoder
    with open(encoder / "config.json", "a", encoding="utf-8") as f:
        f.write("\n")
    with pytest.raises(AudiotextError, match=f"another run \\(the text encoder {encoder} has changed since;"):
        load_run(run)
    config["text"]["encoder"], config["text"]["alphabet"] = "", "korean"  # another normalisation of the same text
    (run / "config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(AudiotextError, match='trained with text.alphabet = "any" \\(now "korean"\\) in config.json'):
        load_run(run)


def test_a_run_folder_never_gets_its_pickles_unpickled(trained_runs, tmp_path, cli_error):
    run = trained_copy(trained_runs, tmp_path)
    stored = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert Path(stored["data_path"]).is_absolute()  # tests from any folder once named
    code, printed = cli_error("test", "--run_dir", run, "--quiet")
    assert code == 1 and "a pickle can run code when read, so a run folder's own data path is not unpickled" in printed


# --- Audio and transcripts given for prediction ------------------------------------------------


@pytest.fixture(scope="module")
def recognizer(trained_runs) -> EmotionRecognizer:
    return EmotionRecognizer.from_pretrained(trained_runs["mult"], device="cpu")


def scores_of(result) -> np.ndarray:
    return np.array([s["score"] for s in result])


@pytest.mark.parametrize(
    "make, message",
    [(lambda c, p: p.write_bytes(b"RIFF not really a wav"), "not a readable media file"),
     (lambda c, p: p.write_bytes(b""), "not a readable media file"),
     (lambda c, p: p.write_bytes(Path(__file__).read_bytes()), "not a readable media file")],
    ids=["corrupt", "zero-length", "not-audio"],
)  # fmt: skip
def test_unreadable_files_are_refused_by_name(recognizer, clips, tmp_path, make, message):
    path = tmp_path / "clip.wav"
    make(clips[0], path)
    with pytest.raises(AudiotextError, match=f"clip.wav: {message}"):
        recognizer.predict(str(path), text="문장")


def test_nan_and_inf_samples_are_refused(recognizer, clips):
    for bad in (np.nan, np.inf):
        samples = clips[0] / 32768.0
        samples[100] = bad
        with pytest.raises(AudiotextError, match="clip 0: the samples hold NaN or infinite values"):
            recognizer.predict(samples, text="문장", sampling_rate=RATE)


def test_odd_arguments_and_file_names_are_refused_in_our_words_or_read(recognizer, clips, tmp_path, cli_error):
    clip = {"raw": clips[0], "sampling_rate": RATE}
    with pytest.raises(SettingError, match="top_k must be at least 1"):  # 0 gave no class, -1 all but one
        recognizer.predict(clip, text="문장", top_k=0)
    with pytest.raises(SettingError, match="top_k must be at least 1"):  # before any clip is read: not 'no such file'
        recognizer.predict(["no-such.wav"] * 3, text=[None] * 3, top_k=0)
    for rate in (float("nan"), "48k"):  # a bare ValueError of int() before
        with pytest.raises(DataError, match="clip 0: an array of samples needs its sampling_rate"):
            recognizer.predict(clips[0], text="문장", sampling_rate=rate)
    with pytest.raises(DataError, match="clip 0: a sample rate of 48 Hz holds no speech: .* \\(a rate given in kHz\\?\\)"):
        recognizer.predict(clips[0], text="문장", sampling_rate=48)  # it was resampled into a 15-minute hum, and predicted
    as_bfloat16 = torch.from_numpy(clips[0] / np.float32(32768)).to(torch.bfloat16)  # NumPy has no such dtype
    expected = recognizer.predict(as_bfloat16.float().numpy(), text="문장", sampling_rate=RATE)
    assert recognizer.predict(as_bfloat16, text="문장", sampling_rate=RATE) == expected
    odd_name = tmp_path / os.fsdecode(b"b\xff.wav")  # a name that is not UTF-8: libsndfile was handed it as UTF-8
    sf.write(os.fsencode(odd_name), clips[0], RATE, subtype="PCM_16")
    assert recognizer.predict(str(odd_name), text="문장") == recognizer.predict(clip, text="문장")
    (tmp_path / "a_file").write_text("")
    code, printed = cli_error("export", recognizer.source, "--out", tmp_path / "a_file" / "model")
    assert code == 1 and printed == f"error: cannot write --out {tmp_path / 'a_file' / 'model'}: {tmp_path / 'a_file'} is a file, not a folder\n"


def test_silence_is_refused_and_stereo_8bit_and_other_rates_are_predicted(recognizer, clips, tmp_path):
    with pytest.raises(AudiotextError, match="clip 0: clip has 0 samples at 8000 Hz once its edge zeros are trimmed"):
        recognizer.predict(np.zeros(RATE, np.int16), text="문장", sampling_rate=RATE)
    hiss = np.random.default_rng(0).integers(-3, 4, RATE).astype(np.int16)  # near silence is a clip
    assert scores_of(recognizer.predict(hiss, text="문장", sampling_rate=RATE)).sum() == pytest.approx(1, abs=1e-5)
    mono = scores_of(recognizer.predict(clips[0], text="문장", sampling_rate=RATE))
    stereo = scores_of(recognizer.predict(np.stack([clips[0], clips[0]], axis=1), text="문장", sampling_rate=RATE))
    assert stereo == pytest.approx(mono, abs=1e-4)
    sf.write(tmp_path / "u8.wav", clips[0], RATE, subtype="PCM_U8")
    eight_bit = scores_of(recognizer.predict(str(tmp_path / "u8.wav"), text="문장"))
    assert np.abs(eight_bit - mono).max() < 0.2  # 8-bit quantisation changes the clip, not its reading
    sf.write(tmp_path / "16k.wav", clips[0][::3], 16000, subtype="PCM_16")
    assert scores_of(recognizer.predict(str(tmp_path / "16k.wav"), text="문장")).sum() == pytest.approx(1, abs=1e-5)


def test_over_long_audio_and_transcripts_are_cut_to_the_models_lengths(recognizer, clips):
    long_clip = np.tile(clips[0], 20)  # a minute: more frames than max_len_for_audio
    head = long_clip[: RATE * 15]  # 600 frames at 8 kHz: the model reads the first 400
    assert scores_of(recognizer.predict(long_clip, text="문장", sampling_rate=RATE)) == pytest.approx(
        scores_of(recognizer.predict(head, text="문장", sampling_rate=RATE)), abs=1e-5
    )
    long_text = "정말 " * 500
    assert scores_of(recognizer.predict(clips[0], text=long_text, sampling_rate=RATE)).sum() == pytest.approx(1, abs=1e-5)


class Says:
    """A recogniser that hears one fixed sentence: the `Transcriber` interface another recogniser plugs into."""

    def __init__(self, sentence: str):
        self.sentence, self.calls = sentence, 0

    def transcribe(self, samples: np.ndarray, sampling_rate: int) -> str:
        self.calls += 1
        return self.sentence


def test_transcripts_empty_whitespace_or_without_letters(recognizer, trained_runs, clips):
    with pytest.raises(AudiotextError, match=r"the transcript '😀 …' normalises to nothing \(the text features keep letters"):
        recognizer.predict(clips[0], text="😀 …", sampling_rate=RATE)
    foreign = scores_of(recognizer.predict(clips[0], text="Привет, мир", sampling_rate=RATE))
    assert foreign.sum() == pytest.approx(1, abs=1e-5)
    # An empty or blank transcript is no transcript: the recogniser is asked.
    listening = EmotionRecognizer.from_pretrained(trained_runs["mult"], device="cpu", transcriber=Says("정말 좋아요"))
    said = scores_of(recognizer.predict(clips[0], text="정말 좋아요", sampling_rate=RATE))
    for blank in ("", "   \t"):
        assert scores_of(listening.predict(clips[0], text=blank, sampling_rate=RATE)) == pytest.approx(said, abs=1e-6)


def test_a_clip_where_nothing_is_heard_is_transcribed_once_and_refused(trained_runs, clips, tmp_path):
    from audiotext.inference.batch import predict_manifest

    deaf = Says("")
    recognizer = EmotionRecognizer.from_pretrained(trained_runs["linear"], device="cpu", transcriber=deaf)
    sf.write(tmp_path / "c.wav", clips[0], RATE, subtype="PCM_16")
    pd.DataFrame({"audio": ["c.wav"], "text": ["  "]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(AudiotextError, match=r"m.csv: row 1: the recogniser heard no words; give the transcript$"):
        predict_manifest(recognizer, tmp_path / "m.csv", tmp_path / "p.csv", progress=False)
    assert deaf.calls == 1 and not (tmp_path / "p.csv").exists()


def test_a_count_that_is_no_whole_number_is_refused(recognizer, clips):
    clip = {"raw": clips[0], "sampling_rate": RATE}
    for top_k in (2.5, True):  # a TypeError of the slice; True gave one class
        with pytest.raises(SettingError, match=f"^top_k must be a whole number, got {top_k}$"):
            recognizer.predict(clip, text="문장", top_k=top_k)
    for size in (2.0, None):  # a ValueError of islice; a TypeError of None < 1
        with pytest.raises(SettingError, match=f"^batch_size must be a whole number, got {size}$"):
            recognizer.predict([clip], text=["문장"], batch_size=size)
    assert len(recognizer.predict(clip, text="문장", top_k=np.int64(2))) == 2


def test_a_transcript_that_is_no_string_is_refused_and_a_pandas_nan_is_none(trained_runs, clips):
    listening = EmotionRecognizer.from_pretrained(trained_runs["mult"], device="cpu", transcriber=Says("정말 좋아요"))
    clip = {"raw": clips[0], "sampling_rate": RATE}
    for text in (5, "문장".encode()):  # an AttributeError of `.strip()` before
        with pytest.raises(DataError, match=f"^clip 0: a transcript is a string .*, got {type(text).__name__} "):
            listening.predict(clip, text=text)
    # A column with an empty cell holds NaN there: that clip is transcribed, as a manifest's is.
    expected = listening.predict([clip, clip], text=["문장", None])
    assert listening.predict([clip, clip], text=pd.Series(["문장", np.nan])) == expected
    # In a column of pandas' string dtype the empty cell is NA (it was refused as 'got NAType <NA>').
    assert listening.predict([clip, clip], text=pd.Series(["문장", None], dtype="string")) == expected


def test_a_generator_or_an_array_of_paths_is_a_list_of_clips(recognizer, clips, tmp_path):
    paths = [str(tmp_path / f"c{i}.wav") for i in range(2)]
    for clip, path in zip(clips, paths):
        sf.write(path, clip, RATE, subtype="PCM_16")
    expected = recognizer.predict(paths, text=["문장"] * 2)
    # Both were taken for one clip's samples: an AttributeError of the list of transcripts.
    assert recognizer.predict((path for path in paths), text=["문장"] * 2) == expected
    assert recognizer.predict(np.array(paths), text=["문장"] * 2) == expected
    with pytest.raises(DataError, match="^clip 0: "):  # a 0-d array of objects: a TypeError of iterating it
        recognizer.predict(np.array(paths[0], dtype=object), text="문장")
    with pytest.raises(DataError, match=r"^clip 0: a dict clip gives its own 'sampling_rate' \(and 'raw' or 'array'\)"):
        recognizer.predict({"path": paths[0], "sampling_rate": RATE}, text="문장")  # the shape () of None
    # An open file is an iterator too, of its bytes' lines: '1111 clips but one transcript'.
    with open(paths[0], "rb") as f, pytest.raises(DataError, match="^clip 0: an open file is no clip: give its path"):
        recognizer.predict(f, text="문장")
    with pytest.raises(DataError, match="^clip 0: an open file is no clip"):
        recognizer.predict([io.BytesIO(Path(paths[0]).read_bytes())], text=["문장"])


def test_a_file_name_that_starts_like_an_ffmpeg_protocol_is_that_file(recognizer, clips, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sf.write("concat:c.flac", clips[0], RATE)
    sf.write("c.flac", clips[1], RATE)
    expected = {s["label"]: s["score"] for s in recognizer.predict({"raw": clips[0], "sampling_rate": RATE}, text="문장")}
    # FFmpeg read the name as its concat protocol's URL: the other file, c.flac, was predicted.
    found = {s["label"]: s["score"] for s in recognizer.predict("concat:c.flac", text="문장")}
    assert found == pytest.approx(expected, abs=1e-5)
    with pytest.raises(DataError, match=r"^file:c.flac: unreadable path \(No such file"):  # a FileNotFoundError
        recognizer.predict("file:c.flac", text="문장")


def test_debug_shows_the_traceback_instead_of_the_line(demo_corpus, tmp_path):
    from audiotext.cli import main
    from audiotext.errors import SettingError

    with pytest.raises(SettingError, match="n_mfcc = 0"):
        main(["train", "--data_path", str(demo_corpus), "--output_dir", str(tmp_path), "--n_mfcc", "0", "--debug"])
