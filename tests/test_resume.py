"""Runs that survive: a training process killed (SIGKILL) or interrupted (Ctrl-C) at any step
resumes to exactly the run it would have been; a finished run is replaced only when asked, and then
whole; an unfinished run is never tested or exported as if it were done."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file

from audiotext.cli import main
from audiotext.config import RunConfig
from audiotext.training.run_folder import claimed_run_folder
from audiotext.training.state import TrainingStateError, load_state, save_state

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--model", "audio", "--layers", "1", "--resample_rate", "8000", "--num_epochs", "3", "--quiet"]


def train_args(data: Path, out: Path, name: str, *extra: str) -> list[str]:
    return ["train", "--data_path", str(data), "--output_dir", str(out), "--name", name, *FLAGS, *extra]


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "audiotext.cli", *args], cwd=ROOT, stderr=subprocess.PIPE, text=True)


def wait_for_step(process: subprocess.Popen, state: Path, step: int, per_epoch: int) -> tuple[int, int]:
    """Waits until the checkpoint in `state` is at or past overall step `step`; returns (epoch, step)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        try:
            saved = load_state(state) if state.is_file() else None
        except TrainingStateError:
            # Replaced while read: safetensors opens the path twice (header, then tensors), and the
            # running job renames a new state onto it at every step. Read it again.
            saved = None
        if saved and (saved["epoch"] - 1) * per_epoch + saved["step"] >= step:
            return saved["epoch"], saved["step"]
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint reached step {step}")


def same_run(a: Path, b: Path) -> None:
    figures = ["epoch", "train_loss", "dev_loss", "dev_accuracy", "dev_macro_f1", "lr"]
    pd.testing.assert_frame_equal(pd.read_csv(a / "epochs.csv")[figures], pd.read_csv(b / "epochs.csv")[figures])
    for name, tensor in load_file(a / "model.safetensors").items():
        assert tensor.equal(load_file(b / "model.safetensors")[name]), name
    # The weights' file digests differ by the run's own facts in their metadata (its folder); the tensors are equal.
    assert json.loads((a / "eval/test/metrics.json").read_text()) | {"run_dir": "", "weights": ""} == json.loads(
        (b / "eval/test/metrics.json").read_text()
    ) | {"run_dir": "", "weights": ""}


@pytest.fixture(scope="module")
def uninterrupted(demo_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    main(train_args(demo_corpus, out, "run"))
    main(["test", "--data_path", str(demo_corpus), "--output_dir", str(out), "--name", "run", "--quiet"])
    return out / "run"


@pytest.mark.slow
def test_a_run_killed_at_a_random_step_resumes_to_the_uninterrupted_run(demo_corpus, uninterrupted, tmp_path):
    per_epoch = -(-len(pd.read_pickle(demo_corpus / "train.pkl")) // 24)
    target = random.Random().randrange(1, 3 * per_epoch)  # any step but the last
    process = start(train_args(demo_corpus, tmp_path, "run", "--checkpoint_steps", "1"))
    epoch, step = wait_for_step(process, tmp_path / "run" / "resume.safetensors", target, per_epoch)
    process.send_signal(signal.SIGKILL)
    process.wait()
    print(f"killed at or after epoch {epoch}, step {step} of {per_epoch} (aimed at overall step {target})")
    assert not (tmp_path / "run" / "finished.json").exists()
    # The epoch under way had trained for a while (read as 1000 s) before the kill: its logged time counts it.
    state = tmp_path / "run" / "resume.safetensors"
    saved = load_state(state)
    save_state(state, saved | {"seconds": 1000.0})

    main(train_args(demo_corpus, tmp_path, "run", "--resume"))
    assert pd.read_csv(tmp_path / "run" / "epochs.csv")["seconds"][saved["epoch"] - 1] > 1000
    main(["test", "--data_path", str(demo_corpus), "--output_dir", str(tmp_path), "--name", "run", "--quiet"])
    same_run(uninterrupted, tmp_path / "run")
    assert not (tmp_path / "run" / "resume.safetensors").exists()


@pytest.mark.slow
def test_ctrl_c_prints_one_line_and_leaves_a_run_that_tests_only_when_asked_and_resumes(
    demo_corpus, uninterrupted, tmp_path, cli_error
):
    process = start(train_args(demo_corpus, tmp_path, "run"))
    wait_for_step(process, tmp_path / "run" / "resume.safetensors", 1, 1)  # epoch 1 done: best weights exist
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert err.strip().count("\n") == 0 and err.startswith("interrupted: stopped at epoch "), err
    assert "the same command with --resume continues it" in err

    test_args = ["test", "--data_path", demo_corpus, "--output_dir", tmp_path, "--name", "run", "--quiet"]
    code, printed = cli_error(*test_args)
    assert code == 1 and "training did not finish (no finished.json)" in printed
    with pytest.warns(UserWarning, match="did not finish training: using its best epoch so far"):
        main([str(a) for a in [*test_args, "--best_so_far"]])
    code, printed = cli_error("export", tmp_path / "run", "--out", tmp_path / "model")
    assert code == 1 and "training did not finish" in printed and not (tmp_path / "model").exists()

    code, printed = cli_error(*train_args(demo_corpus, tmp_path, "run"))
    assert code == 1 and "holds an unfinished run: --resume continues it" in printed
    code, printed = cli_error(*train_args(demo_corpus, tmp_path, "run", "--resume", "--lr", "0.01"))
    assert code == 2 and "started this run with train.lr = 0.001 (now 0.01)" in printed
    main(train_args(demo_corpus, tmp_path, "run", "--resume"))
    # The unfinished model's test figures are gone with it, from the folder and the run's report.
    assert not (tmp_path / "run" / "eval").exists()
    assert "Test figures" not in (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    main([str(a) for a in test_args])
    same_run(uninterrupted, tmp_path / "run")


@pytest.mark.slow
def test_a_finished_run_is_replaced_only_with_overwrite_and_then_whole(demo_corpus, uninterrupted, tmp_path, cli_error):
    run = tmp_path / "run"
    main(train_args(demo_corpus, tmp_path, "run", "--num_epochs", "1"))
    (run / "eval" / "old").mkdir(parents=True)
    code, printed = cli_error(*train_args(demo_corpus, tmp_path, "run"))
    assert code == 1 and "holds a finished run: --overwrite replaces it" in printed

    # Killed while replacing: the old run is untouched; --resume finishes the new one and swaps it in.
    process = start(train_args(demo_corpus, tmp_path, "run", "--overwrite"))
    wait_for_step(process, tmp_path / ".run.overwrite" / "resume.safetensors", 1, 1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (run / "eval" / "old").is_dir() and len(pd.read_csv(run / "epochs.csv")) == 1
    # What a kill mid-write leaves: removed by the next training to hold the folder.
    (tmp_path / ".run.overwrite" / f".resume.{'0' * 32}.tmp.safetensors").write_bytes(b"cut short")
    main(train_args(demo_corpus, tmp_path, "run", "--resume"))
    assert not (run / "eval").exists() and not (tmp_path / ".run.overwrite").exists()
    assert len(pd.read_csv(run / "epochs.csv")) == 3 and not list(run.glob(".*"))
    assert len(pd.read_csv(tmp_path / "results.csv")) == 1  # the replaced run's row went with it
    main(["test", "--data_path", str(demo_corpus), "--output_dir", str(tmp_path), "--name", "run", "--quiet"])
    same_run(uninterrupted, run)
    assert sorted(os.listdir(tmp_path)) == ["results.csv", "run"]

    # Stopped between the swap's two renames: the next training into the folder completes the swap.
    shutil.copytree(run, tmp_path / ".run.overwrite")
    run.rename(tmp_path / f".run.{'0123abcd' * 4}.old")  # as finish_run_folder names it
    other_runs = tmp_path / f".run.b.{'0' * 32}.old"  # run "run.b"'s, in the middle of its own swap
    other_runs.mkdir()
    code, printed = cli_error(*train_args(demo_corpus, tmp_path, "run"))
    assert code == 1 and "holds a finished run: --overwrite replaces it" in printed
    other_runs.rmdir()  # left alone
    assert sorted(os.listdir(tmp_path)) == ["results.csv", "run"]
    same_run(uninterrupted, run)

    # A folder of other files has no run to resume: --resume was told to give --resume.
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("mine", encoding="utf-8")
    code, printed = cli_error(*train_args(demo_corpus, tmp_path, "notes", "--resume"))
    assert code == 1 and printed == f"error: {tmp_path / 'notes'} holds files but no run (no config.json): choose another --name, or empty it\n"


@pytest.mark.slow
def test_a_resume_refuses_a_dev_set_changed_since_the_run_stopped(demo_corpus, tmp_path, cli_error):
    # Its best epoch would have been chosen across the figures of two dev sets.
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split in ("train", "dev", "test"):
        (corpus / f"{split}.pkl").write_bytes((demo_corpus / f"{split}.pkl").read_bytes())
    process = start(train_args(corpus, tmp_path, "run", "--checkpoint_steps", "1"))
    wait_for_step(process, tmp_path / "run" / "resume.safetensors", 1, 1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (corpus / "dev.pkl").write_bytes((demo_corpus / "test.pkl").read_bytes())  # another dev set
    code, printed = cli_error(*train_args(corpus, tmp_path, "run", "--resume"))
    assert code == 1 and "resume.safetensors: saved on other training or dev data" in printed, printed


@pytest.mark.slow
def test_a_resume_refuses_a_config_json_edited_since_the_run_stopped(demo_corpus, tmp_path, cli_error):
    # The command line is checked against config.json: edited alike, the run went on at the old rate.
    process = start(train_args(demo_corpus, tmp_path, "run", "--checkpoint_steps", "1"))
    wait_for_step(process, tmp_path / "run" / "resume.safetensors", 1, 1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    config = tmp_path / "run" / "config.json"
    edited = json.loads(config.read_text(encoding="utf-8"))
    edited["train"]["lr"] = 0.01
    config.write_text(json.dumps(edited), encoding="utf-8")
    code, printed = cli_error(*train_args(demo_corpus, tmp_path, "run", "--resume", "--lr", "0.01"))
    assert code == 1 and "resume.safetensors: saved by a run with train.lr = 0.001 (now 0.01)" in printed, printed

    # A state saved before states recorded their settings resumes on the config.json check alone.
    state = load_state(tmp_path / "run" / "resume.safetensors")
    del state["data"]["run"]
    save_state(tmp_path / "run" / "resume.safetensors", state)
    edited["train"]["lr"] = 0.001
    config.write_text(json.dumps(edited), encoding="utf-8")
    main(train_args(demo_corpus, tmp_path, "run", "--resume"))
    assert (tmp_path / "run" / "finished.json").is_file()


def test_a_second_training_into_a_run_folder_being_written_is_refused(demo_corpus, tmp_path, cli_error):
    # Both ran: one's config.json ended beside the other's weights, and `test` took the mix.
    with claimed_run_folder(tmp_path / "run", RunConfig(name="run", data_path=str(demo_corpus))):
        code, printed = cli_error(*train_args(demo_corpus, tmp_path, "run"))
    assert code == 1 and printed == (f"error: {tmp_path / 'run'}: another training is writing this run now (process "
                                     f"{os.getpid()}); wait for it to end, or train into another folder\n")  # fmt: skip
    assert not (tmp_path / ".run.lock").exists()
    main(train_args(demo_corpus, tmp_path, "run", "--num_epochs", "1"))  # free again once the first has ended
    assert (tmp_path / "run" / "finished.json").is_file()
