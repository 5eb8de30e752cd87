"""Using a trained model: the model folder, EmotionRecognizer and `audiotext predict`, on real
clips of the demo corpus and the runs of the `trained_runs` fixture."""

import json
import multiprocessing
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from audiotext.cli import main
from audiotext.errors import SettingError
from audiotext.inference.export import FOLDER_INFO, MODEL_CARD, TEXT_ENCODER_DIR, export_model
from audiotext.inference.recognizer import EmotionRecognizer
from audiotext.models.checkpoint import CheckpointError

RATE = 48000  # the demo corpus's pickles, like the reference's, hold 48 kHz clips


@pytest.fixture(scope="module")
def model_folders(trained_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    return {name: export_model(run, out / name) for name, run in trained_runs.items()}


def test_probabilities_through_the_api_equal_what_audiotext_test_wrote(model_folders, trained_runs, demo_corpus):
    test = pd.read_pickle(demo_corpus / "test.pkl")
    for name, folder in model_folders.items():
        written = pd.read_csv(trained_runs[name] / "eval" / "test" / "predictions.csv")
        recognizer = EmotionRecognizer.from_pretrained(folder, device="cpu")
        rows = list(range(0, len(test), 7))  # 15 clips in batches that mix lengths
        clips = [{"raw": test["audio"].iloc[i], "sampling_rate": RATE} for i in rows]
        texts = list(test["Sentence"].iloc[rows])
        probabilities = recognizer.predict_proba(clips, texts, batch_size=4)
        expected = written.loc[rows, [f"p_{label}" for label in recognizer.labels]].to_numpy()
        np.testing.assert_allclose(probabilities, expected, atol=2e-5, err_msg=name)
        assert list(written.loc[rows, "prediction"]) == [recognizer.labels[i] for i in probabilities.argmax(1)]


def test_predict_has_the_pipeline_shape_and_files_stereo_and_lists_agree(model_folders, demo_corpus, tmp_path):
    recognizer = EmotionRecognizer.from_pretrained(model_folders["mult"], device="cpu")
    test = pd.read_pickle(demo_corpus / "test.pkl")
    clip, sentence = test["audio"].iloc[0], test["Sentence"].iloc[0]
    sf.write(tmp_path / "clip.wav", clip, RATE, subtype="PCM_16")
    sf.write(tmp_path / "clip.flac", np.stack([clip, clip], axis=1), RATE)

    from_file = recognizer.predict(str(tmp_path / "clip.wav"), text=sentence)
    assert [s["label"] for s in from_file] and sorted(s["label"] for s in from_file) == sorted(recognizer.labels)
    scores = [s["score"] for s in from_file]
    assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1, abs=1e-5)
    from_array = recognizer.predict(clip, text=sentence, sampling_rate=RATE)
    stereo_file = recognizer.predict(tmp_path / "clip.flac", text=sentence)
    channels_first = recognizer.predict(np.stack([clip, clip]), text=sentence, sampling_rate=RATE)
    floats = recognizer.predict(clip / 32768.0, text=sentence, sampling_rate=RATE)
    for other in (from_array, stereo_file, channels_first, floats):
        assert as_dict(other) == pytest.approx(as_dict(from_file), abs=1e-4)

    batched = recognizer.predict([clip, clip[: RATE // 2]], text=[sentence, sentence], sampling_rate=RATE)
    assert as_dict(batched[0]) == pytest.approx(as_dict(from_array), abs=1e-5) and len(batched) == 2
    assert len(recognizer.predict(clip, text=sentence, sampling_rate=RATE, top_k=2)) == 2


def as_dict(scores: list[dict]) -> dict[str, float]:
    return {s["label"]: s["score"] for s in scores}


def test_bad_clips_are_refused_with_a_reason(model_folders, demo_corpus):
    recognizer = EmotionRecognizer.from_pretrained(model_folders["audio"], device="cpu")
    clip = pd.read_pickle(demo_corpus / "test.pkl")["audio"].iloc[0]
    with pytest.raises(ValueError, match="needs its sampling_rate"):
        recognizer.predict(clip)
    with pytest.raises(ValueError, match=r"must lie in \[-1, 1\], these peak at"):
        recognizer.predict(clip.astype(np.float64), sampling_rate=RATE)
    with pytest.raises(ValueError, match=r"clip 0: clip has \d+ samples at 8000 Hz"):
        recognizer.predict(clip[:10], sampling_rate=RATE)
    with pytest.raises(ValueError, match="no_such.wav: unreadable path"):
        recognizer.predict("no_such.wav")
    stereo_8bit = np.full((RATE, 2), 200, np.uint8)  # refused for its dtype, before the channels are mixed
    with pytest.raises(ValueError, match="^clip 0: samples must be signed integers or floats, got dtype uint8$"):
        recognizer.predict(stereo_8bit, sampling_rate=RATE)


def test_integer_samples_are_scaled_by_their_range_and_int16_values_stored_wider_are_refused(model_folders, demo_corpus):
    recognizer = EmotionRecognizer.from_pretrained(model_folders["audio"], device="cpu")
    clip = pd.read_pickle(demo_corpus / "test.pkl")["audio"].iloc[0]
    as_int16 = recognizer.predict(clip, sampling_rate=RATE)
    assert recognizer.predict(clip.astype(np.int32) * 65536, sampling_rate=RATE) == as_int16  # 32-bit PCM
    # soxr takes no int8 or float16: such clips at another rate than the corpus's were a TypeError.
    for narrow in ((clip // 256).astype(np.int8), (clip / 32768).astype(np.float16)):
        assert recognizer.predict(narrow[::3], sampling_rate=RATE // 3)[0]["label"] in recognizer.labels
    for wide in (clip.astype(np.int32), np.asarray(clip.tolist()), np.stack([clip, clip], axis=1).astype(np.int64)):
        with pytest.raises(ValueError, match=rf"^clip 0: {wide.dtype} samples must use {wide.dtype}'s range, these peak"):
            recognizer.predict(wide, sampling_rate=RATE)


def test_a_list_of_clips_needs_a_list_of_transcripts_and_batches_of_one_or_more(model_folders, demo_corpus):
    recognizer = EmotionRecognizer.from_pretrained(model_folders["linear"], device="cpu")
    test = pd.read_pickle(demo_corpus / "test.pkl")
    clips, sentence = list(test["audio"].iloc[:2]), test["Sentence"].iloc[0]
    with pytest.raises(ValueError, match="^2 clips but one transcript: give a list of transcripts"):
        recognizer.predict(clips, text=sentence, sampling_rate=RATE)  # not one transcript per character
    with pytest.raises(ValueError, match="^2 clips but one transcript: give a list of transcripts"):
        recognizer.predict_proba(clips, sentence, sampling_rate=RATE)
    for texts in ([sentence], [sentence] * 3):  # zip would have dropped a clip, or a transcript
        with pytest.raises(ValueError, match=f"^2 clips but {len(texts)} transcripts$"):
            recognizer.predict_proba(clips, texts, sampling_rate=RATE)
    # A column of a corpus's DataFrame is a list of clips (or transcripts) too.
    as_lists = recognizer.predict(clips, text=list(test["Sentence"].iloc[:2]), sampling_rate=RATE)
    assert recognizer.predict(test["audio"].iloc[:2], text=test["Sentence"].iloc[:2], sampling_rate=RATE) == as_lists
    for size in (0, -1):
        with pytest.raises(SettingError, match=f"^batch_size must be at least 1, got {size}$"):
            recognizer.predict(clips, text=[sentence] * 2, sampling_rate=RATE, batch_size=size)


def test_feature_workers_change_nothing_but_where_features_are_computed(model_folders, demo_corpus):
    test = pd.read_pickle(demo_corpus / "test.pkl")
    clips = [{"raw": clip, "sampling_rate": RATE} for clip in test["audio"].iloc[:15]]
    texts = list(test["Sentence"].iloc[:15])
    alone = EmotionRecognizer.from_pretrained(model_folders["mult"], device="cpu").predict_proba(clips, texts, batch_size=4)
    with EmotionRecognizer.from_pretrained(model_folders["mult"], device="cpu", feature_workers=2) as recognizer:
        # 4 batches: more than the look-ahead, so results come back while later batches are in the workers
        np.testing.assert_allclose(recognizer.predict_proba(clips, texts, batch_size=4), alone, atol=2e-6)
        threads = torch.get_num_threads()
        batches = recognizer.iter_proba(zip(clips, texts, map(str, range(15))), batch_size=4)
        next(batches)
        assert torch.get_num_threads() == max(1, threads - 2)  # the workers' cores are left to them
        assert len(list(batches)) == 3 and torch.get_num_threads() == threads
        clips[9] = {"raw": clips[9]["raw"][:100], "sampling_rate": RATE}
        with pytest.raises(ValueError, match=r"^clip 9: clip has \d+ samples at 8000 Hz"):
            recognizer.predict_proba(clips, texts, batch_size=4)
        assert recognizer.predict_proba(clips[:9], texts[:9], batch_size=4) == pytest.approx(alone[:9], abs=2e-6)
    assert not multiprocessing.active_children()


def test_a_model_card_and_report_show_only_the_runs_own_test_figures(trained_runs, model_folders, demo_corpus, tmp_path, cli_error):
    # Another run tested into this one's eval/ (--eval_dir), or a run folder copied: its figures were shown as this run's.
    run = shutil.copytree(trained_runs["linear"], tmp_path / "linear")
    test = ["test", "--data_path", str(demo_corpus), "--quiet", "--no_feature_cache"]
    main([*test, "--run_dir", str(trained_runs["audio"]), "--eval_dir", str(run / "eval")])
    with pytest.warns(UserWarning, match=r"eval/test/metrics.json holds figures of other weights or labels than the run"):
        card = (export_model(run, tmp_path / "model") / MODEL_CARD).read_text(encoding="utf-8")
    assert "The run was not tested before export: no figures." in card and "- Audio:" in card

    # The training split is marked as such; a split without some classes is warned about.
    main([*test, "--run_dir", str(run), "--split", "train"])
    card = (export_model(run, tmp_path / "model2") / MODEL_CARD).read_text(encoding="utf-8")
    assert "### train (the training data, not held out) (" in card
    frame = pd.read_pickle(demo_corpus / "test.pkl")  # our own corpus file
    frame[frame["Emotion"] == frame["Emotion"].iloc[0]].to_pickle(tmp_path / "one.pkl")
    with pytest.warns(UserWarning, match=r"one: no clip of .*: each counts as F1 0 in macro-F1, the mean over all 7"):
        main([*test, "--run_dir", str(run), "--split", str(tmp_path / "one.pkl"), "--eval_dir", str(tmp_path / "one")])
    text_card = (model_folders["text"] / MODEL_CARD).read_text(encoding="utf-8")
    assert "- Audio:" not in text_card and "- Text:" in text_card  # a text-only model reads no audio

    (run / "eval" / "train" / "metrics.json").write_text('{"n": 3}', encoding="utf-8")
    code, printed = cli_error("export", run, "--out", tmp_path / "model3")
    assert code == 1 and printed == f"error: {run / 'eval' / 'train' / 'metrics.json'}: not the figures of a test (no accuracy, macro_f1, weighted_f1, labels, confusion_matrix, per_class)\n"

    code, printed = cli_error(*test, "--run_dir", model_folders["mult"], "--eval_dir", model_folders["mult"] / "eval")
    assert code == 2 and "lies in a model folder (audiotext export), where nothing may be added" in printed
    code, printed = cli_error(*test, "--run_dir", run, "--batch_size", "0")
    assert code == 2 and printed == "error: --batch_size must be at least 1, got 0\n"


def test_model_folder_stands_alone_and_describes_itself(model_folders, trained_runs, tmp_path):
    folder = model_folders["mult"]
    moved = shutil.copytree(folder, tmp_path / "elsewhere")
    assert (moved / TEXT_ENCODER_DIR / "config.json").is_file()
    config = json.loads((moved / "config.json").read_text(encoding="utf-8"))
    assert config["text"]["encoder"] == TEXT_ENCODER_DIR and config["audio"]["features"] == "mfcc+prosody"
    info = json.loads((moved / FOLDER_INFO).read_text(encoding="utf-8"))
    assert {"audiotext", "torch", "transformers"} <= info["versions"].keys()
    assert "model.safetensors" in info["files"] and f"{TEXT_ENCODER_DIR}/config.json" in info["files"]
    card = (moved / MODEL_CARD).read_text(encoding="utf-8")
    metrics = json.loads((trained_runs["mult"] / "eval" / "test" / "metrics.json").read_text(encoding="utf-8"))
    assert f"macro-F1 {100 * metrics['macro_f1']:.2f}" in card and "| 공포 |" in card and "Intended use" in card
    weights = load_file(moved / "model.safetensors")
    assert weights["streams.audio_norm.std"].min() > 0  # the training set's MFCC statistics travel along
    assert EmotionRecognizer.from_pretrained(moved, device="cpu").labels == config["labels"]


def test_loading_names_what_disagrees(model_folders, trained_runs, tmp_path):
    changed = shutil.copytree(model_folders["linear"], tmp_path / "changed")
    (changed / "README.md").write_text("edited", encoding="utf-8")
    with pytest.raises(CheckpointError, match="README.md: changed since"):
        EmotionRecognizer.from_pretrained(changed)

    run = shutil.copytree(trained_runs["linear"], tmp_path / "run")
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    swapped = dict(config, labels=config["labels"][::-1])
    (run / "config.json").write_text(json.dumps(swapped, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(CheckpointError, match="trained with labels"):
        EmotionRecognizer.from_pretrained(run)
    resampled = dict(config, audio={**config["audio"], "sample_rate": 16000})
    (run / "config.json").write_text(json.dumps(resampled, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(CheckpointError, match="trained with audio"):
        EmotionRecognizer.from_pretrained(run)

    (run / "config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    weights = load_file(run / "model.safetensors")
    name = next(iter(weights))
    save_file({**weights, name: weights[name] * float("nan")}, run / "model.safetensors")
    with pytest.raises(CheckpointError, match=f"{name}.*non-finite"):
        EmotionRecognizer.from_pretrained(run)
    save_file({**weights, name: weights[name][..., :1]}, run / "model.safetensors")
    with pytest.raises(CheckpointError, match=f"{name}.*has shape"):
        EmotionRecognizer.from_pretrained(run)


def test_predict_cli_table_json_and_manifest(model_folders, demo_corpus, tmp_path, capsys, cli_error):
    test = pd.read_pickle(demo_corpus / "test.pkl")
    rows = []
    for i in range(3):
        sf.write(tmp_path / f"{i}.wav", test["audio"].iloc[i], RATE, subtype="PCM_16")
        rows.append({"audio": f"{i}.wav", "text": test["Sentence"].iloc[i], "label": test["Emotion"].iloc[i]})
    pd.DataFrame(rows).to_csv(tmp_path / "clips.csv", index=False)
    model = str(model_folders["mult"])

    main(["predict", model, "--audio", str(tmp_path / "0.wav"), "--text", rows[0]["text"], "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["label"] == printed["scores"][0]["label"] and len(printed["scores"]) == 7

    main(["predict", model, "--audio", str(tmp_path / "0.wav"), "--text", rows[0]["text"]])
    assert f"prediction: {printed['label']}" in capsys.readouterr().out
    # An audio-only model reads no transcript: none is shown as if it had.
    main(["predict", str(model_folders["audio"]), "--audio", str(tmp_path / "0.wav"), "--text", "무서워", "--json"])
    assert json.loads(capsys.readouterr().out)["text"] is None
    main(["predict", str(model_folders["audio"]), "--audio", str(tmp_path / "0.wav"), "--text", "무서워"])
    assert "무서워" not in capsys.readouterr().out
    # A reader that goes away (`| head -0`) is no error of ours: no "error: [Errno 32] Broken pipe".
    process = subprocess.Popen([sys.executable, "-m", "audiotext.cli", "predict", model, "--audio",
                                str(tmp_path / "0.wav"), "--text", rows[0]["text"]],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    process.stdout.close()
    assert process.wait(timeout=120) == 141 and process.stderr.read() == ""

    main(["predict", model, "--manifest", str(tmp_path / "clips.csv"), "--out", str(tmp_path / "p.csv"), "--quiet"])
    table = pd.read_csv(tmp_path / "p.csv")
    assert list(table["true_value"]) == [r["label"] for r in rows]
    assert table.iloc[0]["prediction"] == printed["label"]
    assert table[[f"p_{s['label']}" for s in printed["scores"]]].iloc[0].tolist() == pytest.approx(
        [s["score"] for s in printed["scores"]], abs=1e-5)

    main(["predict", model, "--manifest", str(demo_corpus), "--split", "test", "--out", str(tmp_path / "t.csv"),
          "--quiet"])  # fmt: skip
    in_one_process = pd.read_csv(tmp_path / "t.csv")
    assert len(in_one_process) == len(test)
    main(["predict", model, "--manifest", str(demo_corpus), "--split", "test", "--out", str(tmp_path / "w.csv"),
          "--quiet", "--feature_workers", "2", "--batch_size", "8"])  # fmt: skip
    # Workers compute MFCCs on one thread, this process on several: sums in another order differ in
    # the last float32 bit, which can move a value to the next float16 (the features are stored as such).
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "w.csv"), in_one_process, atol=1e-5)

    code, printed = cli_error("predict", model, "--manifest", tmp_path / "clips.csv", "--feature_workers", "-1")
    assert code == 2 and printed.strip() == "error: feature_workers must be 0 or more, got -1"

    main(["predict", model, "--manifest", str(tmp_path / "clips.csv"), "--out", str(tmp_path / "pw.csv"), "--quiet",
          "--feature_workers", "2"])  # fmt: skip
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "pw.csv"), table, atol=1e-5)  # files decoded in the workers

    (tmp_path / "1.wav").unlink()
    for workers in ("0", "2"):
        code, printed = cli_error("predict", model, "--manifest", tmp_path / "clips.csv", "--out", tmp_path / "q.csv",
                                  "--feature_workers", workers)  # fmt: skip
        last_line = printed.rstrip("\n").split("\n")[-1]  # the progress bar ends its own line first
        assert code == 1 and re.match(r"error: .*clips.csv: row 2, column 'audio'.*unreadable path", last_line)
        assert not (tmp_path / "q.csv").exists()


def test_export_replaces_only_a_model_folder_or_an_empty_one(model_folders, trained_runs, tmp_path, cli_error):
    other_run = shutil.copytree(trained_runs["audio"], tmp_path / "other_run")  # has a config.json too
    kept = sorted(p.name for p in other_run.iterdir())
    code, printed = cli_error("export", trained_runs["linear"], "--out", other_run)
    assert code == 1 and printed == (f"error: refusing to replace --out {other_run}: it exists and is not a model "
                                     "directory (no audiotext.json)\n")  # fmt: skip
    recognizer = EmotionRecognizer.from_pretrained(model_folders["linear"], device="cpu")
    with pytest.raises(FileExistsError, match=f"refusing to replace out_dir {other_run}: "):
        recognizer.save_pretrained(other_run)
    assert sorted(p.name for p in other_run.iterdir()) == kept
    (tmp_path / "empty").mkdir()
    recognizer.save_pretrained(tmp_path / "empty")
    main(["export", str(trained_runs["audio"]), "--out", str(tmp_path / "empty")])  # now a model folder: replaced
    assert EmotionRecognizer.from_pretrained(tmp_path / "empty", device="cpu").cfg.model.modality == "audio"


def test_predict_cli_refuses_a_batch_size_split_or_out_it_cannot_use(model_folders, demo_corpus, tmp_path, cli_error):
    test = pd.read_pickle(demo_corpus / "test.pkl")
    for i in range(2):
        sf.write(tmp_path / f"{i}.wav", test["audio"].iloc[i], RATE, subtype="PCM_16")
    manifest, out = tmp_path / "clips.csv", tmp_path / "p.csv"
    pd.DataFrame({"audio": ["0.wav", "1.wav"], "text": list(test["Sentence"].iloc[:2]), "split": ["train", "test"]}
                 ).to_csv(manifest, index=False)  # fmt: skip
    model = model_folders["linear"]
    for size in ("0", "-1"):
        code, printed = cli_error("predict", model, "--manifest", manifest, "--out", out, "--batch_size", size)
        assert code == 2 and printed == f"error: --batch_size must be at least 1, got {size}\n"
    code, printed = cli_error("predict", model, "--manifest", manifest, "--out", out, "--split", "dev", "--quiet")
    assert code == 1 and printed == f"error: {manifest}: no rows with --split 'dev'; the manifest's splits are 'test', 'train'\n"
    code, printed = cli_error("predict", model, "--manifest", manifest, "--out", manifest / "p.csv", "--quiet")
    assert code == 2 and printed == f"error: --out {manifest / 'p.csv'}: {manifest} is a file, not a folder\n"
    # What predict reads would be replaced by its predictions: the manifest, a split, a file of the model.
    before = manifest.read_bytes()
    for read, data in ((manifest, manifest), (demo_corpus / "test.pkl", demo_corpus), (model / "config.json", manifest)):
        code, printed = cli_error("predict", model, "--manifest", data, "--split", "test", "--out", read, "--quiet")
        assert code == 2 and printed == (f"error: --out {read} is the manifest, a split or a file of the model, "
                                          "which this command reads: name a new file to write\n")  # fmt: skip
    assert manifest.read_bytes() == before
    # A flag the other way reads would be ignored: refused.
    code, printed = cli_error("predict", model, "--manifest", manifest, "--out", out, "--json", "--text", "좋아")
    assert code == 2 and printed == "error: --text, --json: only with --audio\n"
    code, printed = cli_error("predict", model, "--audio", tmp_path / "0.wav", "--out", out, "--feature_workers", "2")
    assert code == 2 and printed == "error: --out, --feature_workers: only with --manifest\n"
    assert not out.exists()


def test_sigterm_during_export_stops_it_like_ctrl_c_and_leaves_nothing_half_written(trained_runs, tmp_path):
    # `timeout`, `kill` or a scheduler: SIGTERM killed the process mid-write and left .model.<hex>.tmp/ behind.
    process = subprocess.Popen([sys.executable, "-m", "audiotext.cli", "export", str(trained_runs["mult"]), "--out",
                                str(tmp_path / "model"), "--onnx"], stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not any(tmp_path.glob(".model.*.tmp")):  # the folder being written
        assert process.poll() is None and time.monotonic() < deadline, "export ended before it was stopped"
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and err == "interrupted\n", err
    assert list(tmp_path.iterdir()) == []


def test_a_file_at_another_rate_gets_the_features_training_gave_it(demo_corpus, tmp_path):
    from audiotext.config import AudioConfig
    from audiotext.data.manifest import load_any_split
    from audiotext.features.audio import MFCC, clip_features, resample
    from audiotext.features.workers import job_features
    from audiotext.inference.recognizer import read_clip

    # Training reads a manifest's files at the corpus's rate (48 kHz), then trims and resamples; predict
    # resampled straight from 16 kHz and trimmed there: other features (0.004 in a probability).
    clip = resample(pd.read_pickle(demo_corpus / "test.pkl")["audio"].iloc[0], RATE, 16000)
    silent_edges = np.concatenate([np.zeros(800), clip, np.zeros(800)])
    sf.write(tmp_path / "c.wav", silent_edges, 16000, subtype="PCM_16")
    pd.DataFrame({"audio": ["c.wav"], "text": ["좋아"], "label": ["행복"], "split": ["test"]}).to_csv(tmp_path / "m.csv", index=False)
    cfg = AudioConfig(features="mfcc+prosody", resample_rate=8000)
    trained_on = clip_features(load_any_split(tmp_path / "m.csv", "test", ["행복"], cfg.sample_rate).audio[0], cfg)
    predicted_from = job_features((str(tmp_path / "c.wav"), None, "c.wav", read_clip), cfg, MFCC.of(cfg))
    assert np.array_equal(predicted_from, trained_on)
