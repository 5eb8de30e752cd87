"""The reference-compatible entry points, run as a user runs them."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest

from audiotext.cli import build_parser
from audiotext.errors import SettingError
from audiotext.models.classifiers import Dims

ROOT = Path(__file__).resolve().parents[1]

# Every flag of the reference train.py (its README's usage block).
REFERENCE_FLAGS = """
--do_audio --merge_how --model --data_name --data_path --bert_config_path --bert_args_path --bert_model_path
--attn_dropout --attn_dropout_a --attn_dropout_v --relu_dropout --embed_dropout --res_dropout --out_dropout
--layers --d_model --d_out --num_heads --attn_mask --batch_size --clip --lr --optim --num_epochs --when
--batch_chunk --local_rank --warmup_percent --max_len_for_text --hidden_size_for_bert --max_len_for_audio
--sample_rate --resample_rate --n_fft_size --n_mfcc --logging_steps --seed --no_cuda --name
""".split()

FAST = ["--num_epochs=1", "--layers=1", "--resample_rate=8000", "--attn_dropout=0", "--quiet"]


def run(*args, env=None):
    result = subprocess.run(
        [*args], cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_every_reference_flag_is_accepted_by_train():
    parser = build_parser()
    subparser = parser._subparsers._group_actions[0].choices["train"]
    known = {opt for action in subparser._actions for opt in action.option_strings}
    assert not set(REFERENCE_FLAGS) - known


def test_test_takes_only_the_flags_it_uses(capsys):
    """A training flag given to `test` would be ignored (the run's config decides): refused instead."""
    build_parser().parse_args(["test", "--name", "audio", "--do_audio", "--data_path", "d", "--split", "test", "test_stt"])
    with pytest.raises(SystemExit) as refused:
        build_parser().parse_args(["test", "--name", "audio", "--lr", "0.1"])
    assert refused.value.code == 2 and "unrecognized arguments: --lr 0.1" in capsys.readouterr().err


def test_flag_values_reach_the_configuration():
    from audiotext.cli import config_from_args

    args = build_parser().parse_args(
        ["train", "--do_audio", "--merge_how=last", "--layers=3", "--n_mfcc=20", "--lr=0.01", "--when=4",
         "--no_attn_mask", "--batch_chunk=2", "--resample_rate=8000", "--optim=AdamW"]
    )
    cfg = config_from_args(args)
    assert (cfg.model.modality, cfg.model.merge_how, cfg.model.layers, cfg.model.attn_mask) == ("audio", "last", 3, False)
    assert (cfg.audio.n_mfcc, Dims.of(cfg, None).audio, cfg.audio.resample_rate) == (20, 20, 8000)
    assert (cfg.train.lr, cfg.train.when, cfg.train.batch_chunk, cfg.train.optim) == (0.01, 4, 2, "AdamW")


def test_d_out_must_match_the_labels():
    from audiotext.cli import config_from_args

    with pytest.raises(SettingError, match="does not match"):
        config_from_args(build_parser().parse_args(["train", "--d_out=5"]))


@pytest.mark.slow
def test_train_py_then_test_py_on_the_reference_pickles(demo_corpus, tmp_path):
    out = tmp_path / "runs"
    run(sys.executable, "train.py", "--do_audio", f"--data_path={demo_corpus}", f"--output_dir={out}",
        "--name=audio", "--batch_chunk=2", *FAST)
    assert (out / "audio" / "model.safetensors").exists()
    assert len(pd.read_csv(out / "results.csv")) == 1

    printed = run(sys.executable, "test.py", f"--data_path={demo_corpus}", f"--output_dir={out}", "--name=audio",
                  "--split", "test", "test_stt", "--quiet")
    assert "| test |" in printed and "| test_stt |" in printed
    for split in ("test", "test_stt"):
        metrics = json.loads((out / "audio" / "eval" / split / "metrics.json").read_text(encoding="utf-8"))
        assert metrics["n"] == len(pd.read_pickle(demo_corpus / f"{split}.pkl"))


@pytest.mark.slow
@pytest.mark.parametrize("model", ["audio", "cross"])
def test_shell_scripts_train_and_test(demo_corpus, tmp_path, model):
    env = {"DATA_PATH": str(demo_corpus), "EPOCHS": "1", "PYTHON": sys.executable}
    out = tmp_path / "runs"
    run("bash", f"train_{model}.sh", f"--output_dir={out}", "--layers=1", "--attn_dropout=0", "--quiet", env=env)
    printed = run("bash", f"test_{model}.sh", f"--output_dir={out}", "--quiet", env=env)
    assert (out / model / "eval" / "test_stt" / "confusion_matrix.png").exists()
    assert f"| {model} | test_stt |" in printed
    config = json.loads((out / model / "config.json").read_text(encoding="utf-8"))
    assert config["audio"]["resample_rate"] == 8000 and config["model"]["modality"] == model


@pytest.mark.slow
def test_prepare_a_manifest_then_train_and_test_on_it(demo_corpus, tmp_path):
    import soundfile as sf

    frame = pd.read_pickle(demo_corpus / "train.pkl")
    rows = []
    for i, clip in enumerate(frame.itertuples()):
        sf.write(tmp_path / f"clip{i}.flac", clip.audio, 48000)
        rows.append({"audio": f"clip{i}.flac", "text": clip.Sentence, "label": clip.Emotion, "speaker": clip.person_ix})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)

    prepared = tmp_path / "prepared"
    printed = run(sys.executable, "-m", "audiotext.cli", "prepare", "manifest", f"--manifest={tmp_path / 'manifest.csv'}",
                  f"--out={prepared}", "--split-by=sentence", "--quiet")
    assert "prepared" in printed
    out = tmp_path / "runs"
    run(sys.executable, "train.py", "--do_audio", f"--data_path={prepared / 'manifest.csv'}", f"--output_dir={out}",
        "--name=manifest", *FAST)
    config = json.loads((out / "manifest" / "config.json").read_text(encoding="utf-8"))
    assert config["labels"] == json.loads((prepared / "labels.json").read_text(encoding="utf-8"))
    run(sys.executable, "test.py", f"--output_dir={out}", "--name=manifest", "--split", "test", "--quiet")
    metrics = json.loads((out / "manifest" / "eval" / "test" / "metrics.json").read_text(encoding="utf-8"))
    test_rows = pd.read_csv(prepared / "manifest.csv").query("split == 'test'")
    assert metrics["n"] == len(test_rows)
    assert not set(test_rows["text"]) & set(pd.read_csv(prepared / "manifest.csv").query("split == 'train'")["text"])

    # Folds of a manifest are manifests over the same audio files: nothing is copied or decoded twice.
    compared = tmp_path / "compare"
    printed = run(sys.executable, "-m", "audiotext.cli", "compare", f"--data={prepared / 'manifest.csv'}",
                  f"--out={compared}", "--models", "linear", "--seeds", "1", "--folds", "3", "--split-by", "sentence",
                  "--resample_rate", "8000", "--quiet")  # fmt: skip
    assert f"### test ({len(pd.read_csv(prepared / 'manifest.csv'))} clips)" in printed
    fold = pd.read_csv(compared / "folds" / "fold0" / "manifest.csv")
    assert set(fold["split"]) == {"train", "dev", "test"} and all(Path(a).is_absolute() for a in fold["audio"])
    assert not set(fold.query("split == 'test'")["text"]) & set(fold.query("split == 'train'")["text"])

    model = tmp_path / "text_model"
    run(sys.executable, "-m", "audiotext.cli", "text", "finetune", f"--data={prepared / 'manifest.csv'}",
        f"--out={model}", "--epochs=1", "--quiet")
    printed = run(sys.executable, "-m", "audiotext.cli", "text", "test", f"--model={model}",
                  f"--data_path={prepared / 'manifest.csv'}", "--split", "test", "--quiet")
    assert "| text_model | test |" in printed
    assert json.loads((model / "eval" / "test" / "metrics.json").read_text(encoding="utf-8"))["n"] == len(test_rows)


@pytest.mark.slow
def test_text_pretrain_finetune_then_korbert_test_sh(demo_corpus, tmp_path):
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("\n".join(pd.read_pickle(demo_corpus / "train.pkl")["Sentence"].unique()), encoding="utf-8")
    pretrained = tmp_path / "pretrained"
    run(sys.executable, "-m", "audiotext.cli", "text", "pretrain", f"--corpus={sentences}", f"--out={pretrained}",
        "--new-tokenizer=300", "--epochs=2", "--quiet")
    assert (pretrained / "config.json").exists() and (pretrained / "model.safetensors").exists()

    model = tmp_path / "best_model"
    printed = run(sys.executable, "-m", "audiotext.cli", "text", "finetune", f"--data={demo_corpus}",
                  f"--out={model}", "--epochs=2", "--quiet")
    assert "best dev epoch" in printed
    env = {"MODEL_DIR": str(model), "DATA_PATH": str(demo_corpus), "AUDIOTEXT": str(Path(sys.executable).parent / "audiotext")}
    printed = run("bash", "korbert_vat/test.sh", env=env)
    assert "| best_model | test |" in printed and "| best_model | test_stt |" in printed
    for split in ("test", "test_stt"):
        metrics = json.loads((model / "eval" / split / "metrics.json").read_text(encoding="utf-8"))
        assert metrics["n"] == len(pd.read_pickle(demo_corpus / f"{split}.pkl"))


def test_model_selection_and_early_stopping_flags_reach_the_configuration():
    from audiotext.cli import config_from_args

    cfg = config_from_args(build_parser().parse_args(["train", "--model", "lmf", "--select_by", "macro_f1",
                                                      "--early_stop", "4", "--merge_how", "stats"]))  # fmt: skip
    assert (cfg.model.modality, cfg.train.select_by, cfg.train.early_stop, cfg.model.merge_how) == ("lmf", "macro_f1", 4, "stats")
    with pytest.raises(SettingError, match="exclude each other"):
        config_from_args(build_parser().parse_args(["train", "--model", "tfn", "--do_audio"]))


@pytest.mark.parametrize("flags, refused", [
    (["--do_audio", "--d_model=40", "--transcript_noise=0.3"], ["--transcript_noise=0.3: the audio model reads no text",
                                                                "--d_model=40: the audio model is as wide as"]),
    (["--model=text", "--n_mfcc=20", "--layers=1", "--no_attn_mask"], ["--n_mfcc=20: the text model reads no audio",
                                                                      "--layers=1: the text model has no Transformer",
                                                                      "--no_attn_mask: the text model"]),
    (["--model=linear", "--merge_how=stats", "--text_features=ngrams"], ["--merge_how=stats: the linear model has no",
                                                                        "--text_features=ngrams: the linear model always"]),
    (["--model=mult", "--text_features=ngrams", "--max_len_for_text=20"], ["--max_len_for_text=20: the mult model"]),
    (["--model=early", "--attn_dropout_a=0.2"], ["--attn_dropout_a=0.2: only mult has audio-to-text attention"]),
    (["--do_audio", "--batch_size=4", "--batch_chunk=8"], ["--batch_chunk 8 is more than --batch_size 4"]),
    (["--do_audio", "--num_epochs=10", "--early_stop=9"], ["--early_stop 9 never stops a run of --num_epochs 10: give at most 8"]),
    # Two epochs or one leave no patience to give (it said 'give at most 0' or '-1').
    (["--do_audio", "--num_epochs=1", "--early_stop=1"], ["--num_epochs 1: drop it, or give --num_epochs 3 or more"]),
])  # fmt: skip
def test_a_flag_that_would_change_nothing_is_warned_of(flags, refused):
    """Each was recorded in config.json and results.csv, and changed nothing the model computed,
    unsaid. A warning, not a refusal: the reference's own command lines give such flags."""
    from audiotext.cli import config_from_args

    with pytest.warns(UserWarning) as warned:
        config_from_args(build_parser().parse_args(["train", *flags]))
    said = [str(w.message) for w in warned]
    assert all(any(part in line for line in said) for part in refused), said
    # At their defaults, or for a model that reads them, they are taken without a word.
    for taken in (["--do_audio", "--d_model=30", "--layers=1"], ["--model=text", "--max_len_for_text=20"],
                  ["--model=mult", "--d_model=40", "--attn_dropout_a=0.2"], ["--do_audio", "--early_stop=8", "--num_epochs=10"]):  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            config_from_args(build_parser().parse_args(["train", *taken]))
    with pytest.warns(UserWarning, match="--attn_dropout_v is accepted for compatibility but has no effect"):
        config_from_args(build_parser().parse_args(["train", "--do_audio", "--attn_dropout_v=0.3"]))  # it said nothing
