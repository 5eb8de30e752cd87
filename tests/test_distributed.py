"""Training past one process: the same commands under torchrun, with 2 CPU processes (gloo), train
as one process does; a process that dies ends the job with one clear line, and the job resumes.

Tolerance: both runs see the same batches, rows and padded tensors; they differ only in the order
float32 sums are taken (each process's half of the gradient is summed by the all-reduce, the loss
from two parts), about 1e-7 relative per step, which Adam's steps carry on. Two epochs leave
figures within 1e-5 relative of each other (measured: 2e-6); the test allows 1e-4.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_resume import same_run, wait_for_step

from audiotext.cli import main
from audiotext.data.synthesis import load_demo_scripts

ROOT = Path(__file__).resolve().parents[1]
ONE = [sys.executable, "-m", "audiotext"]
TWO = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "audiotext"]
NO_DROPOUT = ["--attn_dropout", "--attn_dropout_a", "--relu_dropout", "--embed_dropout", "--res_dropout", "--out_dropout"]
RTOL = 1e-4

pytestmark = pytest.mark.slow


def run(command: list[str], *args: str | Path) -> subprocess.CompletedProcess:
    # One thread per process: two processes on two cores, as a user of this machine would run them.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*command, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def train_args(data: Path, out: Path, name: str, *extra: str) -> list[str]:
    return ["train", "--data_path", str(data), "--output_dir", str(out), "--name", name, "--layers", "1",
            "--resample_rate", "8000", "--quiet", *extra]  # fmt: skip


def test_two_processes_train_as_one_process_does(demo_corpus, tmp_path):
    n = len(pd.read_pickle(demo_corpus / "train.pkl"))
    # The last batch of each epoch then holds one row: one process trains on a stand-in weighted 0.
    batch = next(b for b in range(9, 64) if n % b == 1)
    flags = ["--model", "mult", "--text_features", "ngrams", "--num_epochs", "2", "--batch_size", str(batch),
             "--batch_chunk", "2", *(part for name in NO_DROPOUT for part in (name, "0"))]  # fmt: skip
    run(ONE, *train_args(demo_corpus, tmp_path, "one", *flags))
    two = run(TWO, *train_args(demo_corpus, tmp_path, "two", *flags))

    assert two.stdout.count("best dev epoch") == 1, two.stdout  # the main process alone prints
    a, b = (pd.read_csv(tmp_path / name / "epochs.csv") for name in ("one", "two"))
    for column in ("train_loss", "dev_loss"):
        pd.testing.assert_series_equal(a[column], b[column], rtol=RTOL)
    for column in ("dev_accuracy", "dev_macro_f1", "lr"):
        pd.testing.assert_series_equal(a[column], b[column])
    # Outputs, not weights: a weight whose gradient is zero but for rounding (an attention key's bias;
    # softmax ignores a shift shared by every key) moves by Adam's normalised steps of the rounding.
    for name in ("one", "two"):
        main(["test", "--data_path", str(demo_corpus), "--output_dir", str(tmp_path), "--name", name, "--quiet"])
    p_one, p_two = (pd.read_csv(tmp_path / name / "eval/test/predictions.csv").filter(like="p_") for name in ("one", "two"))
    print(f"test probabilities: largest difference {(p_one - p_two).abs().max().max():.2e}")
    assert ((p_one - p_two).abs() <= RTOL).all().all()
    results = pd.read_csv(tmp_path / "results.csv")
    assert list(results["name"]) == ["one", "two"]  # one row each: one process wrote it
    assert (tmp_path / "two" / "finished.json").is_file() and not (tmp_path / "two" / "resume.safetensors").exists()


def processes_of_job(marker: str) -> dict[int, int]:
    """{rank: pid} of the training processes whose environment holds `marker`."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            env = dict(line.split("=", 1) for line in (entry / "environ").read_text().split("\0") if "=" in line)
        except (OSError, ValueError):
            continue
        if env.get("AUDIOTEXT_TEST_JOB") == marker and "RANK" in env and "audiotext" in (entry / "cmdline").read_text():
            found[int(env["RANK"])] = int(entry.name)
    return found


def test_a_killed_process_ends_the_job_with_one_line_and_the_job_resumes(demo_corpus, tmp_path):
    flags = ["--model", "audio", "--num_epochs", "3", "--checkpoint_steps", "2"]
    run(TWO, *train_args(demo_corpus, tmp_path, "whole", *flags))

    marker = uuid.uuid4().hex
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AUDIOTEXT_TEST_JOB": marker}
    job = subprocess.Popen([*TWO, *train_args(demo_corpus, tmp_path, "broken", *flags)], cwd=ROOT, env=env,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    per_epoch = -(-len(pd.read_pickle(demo_corpus / "train.pkl")) // 24)
    wait_for_step(job, tmp_path / "broken" / "resume.safetensors", per_epoch + 3, per_epoch)
    os.kill(processes_of_job(marker)[1], signal.SIGKILL)
    killed = time.monotonic()
    _, err = job.communicate(timeout=120)
    print(f"the job ended {time.monotonic() - killed:.1f} s after its process 1 was killed")
    assert job.returncode != 0
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: process 0 of 2: another process of this job stopped (")
    assert "resume.safetensors, resumes the job (--resume)" in lines[0]
    assert not (tmp_path / "broken" / "finished.json").exists()

    run(TWO, *train_args(demo_corpus, tmp_path, "broken", *flags, "--resume"))
    for name in ("whole", "broken"):
        main(["test", "--data_path", str(demo_corpus), "--output_dir", str(tmp_path), "--name", name, "--quiet"])
    same_run(tmp_path / "whole", tmp_path / "broken")  # dropout on: each process's generators were restored too


def test_processes_started_with_other_settings_end_the_job_with_one_line(demo_corpus, tmp_path):
    # As on two machines typed apart: the copies drifted apart (another rate) or waited for ever (another batch).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = []
    for rank, lr in ((0, "0.001"), (1, "0.01")):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank)}  # fmt: skip
        started.append(subprocess.Popen([*ONE, *train_args(demo_corpus, tmp_path, "run", "--lr", lr)], cwd=ROOT, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))  # fmt: skip
    printed = [process.communicate(timeout=300)[1] for process in started]
    assert [process.returncode for process in started] == [2, 2]
    assert printed == ["error: process 1 of this job was started with other settings than process 0: settings.train.lr = "
                       "0.001 (now 0.01) ('now': process 1's); start every process with the same command and data\n", ""]
    assert not (tmp_path / "run").exists()


def test_a_data_error_of_the_main_process_ends_the_job_with_its_line_and_no_traceback(demo_corpus, tmp_path):
    # The main process builds the feature cache while the other waits: it got gloo's traceback.
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split in ("train", "test"):
        shutil.copyfile(demo_corpus / f"{split}.pkl", corpus / f"{split}.pkl")
    dev = pd.read_pickle(demo_corpus / "dev.pkl")  # our own corpus file
    dev.at[0, "audio"] = np.zeros_like(dev.at[0, "audio"])  # silent: no MFCC frame
    dev.to_pickle(corpus / "dev.pkl")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AUDIOTEXT_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([*TWO, *train_args(corpus, tmp_path, "run")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    # torchrun's own report of the failed process follows (its ChildFailedError); ours are one line each.
    assert done.returncode != 0 and "[rank" not in done.stderr and "RuntimeError" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and "dev.pkl: row 0" in errors[0], errors
    assert errors[1].startswith("error: process 1 of 2: another process of this job stopped (") and errors[1].endswith(
        "); it stopped before training"), errors  # fmt: skip


def test_text_pretraining_and_fine_tuning_run_in_two_processes(demo_corpus, tmp_path):
    scripts = tmp_path / "scripts.txt"
    scripts.write_text("\n".join(load_demo_scripts()["sentence"]) + "\n", encoding="utf-8")
    pretrained = run(TWO, "text", "pretrain", "--corpus", scripts, "--out", tmp_path / "bert", "--new-tokenizer", "300",
                     "--epochs", "2", "--batch_size", "16", "--lr", "1e-3", "--quiet")  # fmt: skip
    assert pretrained.stdout.count("masked-LM pre-training") == 1
    tuned = run(TWO, "text", "finetune", "--data", demo_corpus, "--encoder", tmp_path / "bert", "--out",
                tmp_path / "classifier", "--epochs", "1", "--batch_size", "16", "--max_len", "32", "--quiet")  # fmt: skip
    assert tuned.stdout.count("fine-tuned text classifier") == 1
    assert (tmp_path / "classifier" / "model.safetensors").is_file()


def test_mixed_precision_is_refused_without_a_gpu(demo_corpus, tmp_path, cli_error):
    code, printed = cli_error(*train_args(demo_corpus, tmp_path, "amp", "--amp", "--no_cuda"))
    assert code == 2 and "amp = True: mixed precision needs a CUDA GPU (--no_cuda was given)" in printed
    assert not (tmp_path / "amp").exists()


def test_a_local_rank_other_than_the_launchers_is_refused(demo_corpus, tmp_path, cli_error, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "0")
    code, printed = cli_error(*train_args(demo_corpus, tmp_path, "rank", "--local_rank", "1"))
    assert code == 2 and "--local_rank 1 differs from LOCAL_RANK=0 set by the launcher" in printed


@pytest.mark.parametrize("variable", ["WORLD_SIZE", "LOCAL_RANK"])
def test_a_launcher_variable_that_is_no_integer_is_named(demo_corpus, tmp_path, cli_error, monkeypatch, variable):
    monkeypatch.setenv(variable, "two")
    code, printed = cli_error(*train_args(demo_corpus, tmp_path, "launcher", "--local_rank", "0"))
    assert code == 2 and f"environment variable {variable}='two' must be an integer (torchrun sets it)" in printed
    assert not (tmp_path / "launcher").exists()
