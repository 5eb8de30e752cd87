"""Domain pre-training: masked-LM loss falls on the demo scripts, both continuing the packaged
MiniLM and from scratch on a WordPiece vocabulary learned from the corpus; the output directory
serves as an encoder for fine-tuning and for the cross-modal model. Both pre-training and
fine-tuning (with its cross-fitting folds), killed mid-job, resume to exactly what an unbroken job
gives."""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import time
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from sklearn.model_selection import StratifiedKFold

from audiotext.cli import main

from audiotext.config import REFERENCE_LABELS, AudioConfig, ModelConfig, RunConfig
from audiotext.data.corpus import CorpusError
from audiotext.data.dataset import encode_split
from audiotext.data.loading import load_encoded
from audiotext.data.manifest import load_any_split
from audiotext.data.synthesis import load_demo_scripts
from audiotext.data.transcripts import hangul_vocabulary, noisy_variants
from audiotext.errors import DataError
from audiotext.features.encoders import load_text_encoder
from audiotext.features.text import (
    OUT_OF_FOLD_STATES,
    TextEncoder,
    default_encoder_path,
    last_hidden_states,
    load_out_of_fold_states,
    normalize_text,
    save_out_of_fold_states,
)
from audiotext.inference.export import export_model
from audiotext.inference.predict import predict_sentences
from audiotext.inference.recognizer import EmotionRecognizer
from audiotext.models.text_classifier import SequenceClassifier
from audiotext.training.masked_lm import (
    extend_vocabulary,
    learn_wordpiece_vocabulary,
    pretrain,
    read_corpus,
    train_wordpiece,
)
from audiotext.training.state import STATE_KEY
from audiotext.training.text_classifier import distinct_pairs, finetune


@pytest.fixture(scope="module")
def scripts_txt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "scripts.txt"
    path.write_text("\n".join(load_demo_scripts()["sentence"]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def scratch(scripts_txt, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("pretrain") / "tiny_bert"
    stats = pretrain(
        [scripts_txt], None, out, epochs=6, lr=1e-3, batch_size=16, seed=0, new_tokenizer_vocab_size=400, progress=False
    )
    return out, stats


SCRATCH_FLAGS = ["--new-tokenizer", "400", "--epochs", "6", "--lr", "1e-3", "--batch_size", "16", "--seed", "0"]
# What `cross_fitted` was fine-tuned with, as flags.
FINETUNE_FLAGS = ["--epochs", "3", "--lr", "1e-3", "--batch_size", "32", "--max_len", "32", "--seed", "0",
                  "--cross-fit", "2", "--labels", ",".join(REFERENCE_LABELS)]  # fmt: skip


@pytest.fixture(scope="module")
def cross_fitted(scratch, demo_corpora, tmp_path_factory) -> Path:
    """The scratch encoder fine-tuned on the script split with two cross-fitting folds."""
    model_dir = tmp_path_factory.mktemp("finetune") / "cross_fitted"
    info = finetune(demo_corpora["script"], scratch[0], model_dir, epochs=3, lr=1e-3, batch_size=32, max_len=32,
                    seed=0, cross_fit_folds=2, progress=False)  # fmt: skip
    assert info["cross_fit_folds"] == 2
    return model_dir


def kill_when(args: list[str], ready: Callable[[], bool]) -> None:
    """Runs `audiotext ARGS...` and kills it (SIGKILL) as soon as `ready()`."""
    process = subprocess.Popen([sys.executable, "-m", "audiotext.cli", *args], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not ready():
        assert process.poll() is None, f"it ended before it could be killed: {process.stderr.read()}"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()


def saved_epoch(state: Path) -> int:
    """The epoch a training state resumes at (0: none saved yet), read from its header alone."""
    if not state.is_file():
        return 0
    with safe_open(str(state), framework="pt") as stored:
        return json.loads(stored.metadata()[STATE_KEY])["epoch"]


def same_tensors(a: Path, b: Path) -> None:
    stored = load_file(b)
    for name, tensor in load_file(a).items():
        assert tensor.equal(stored[name]), f"{a.name}: {name}"


def test_a_killed_pretraining_resumes_to_the_model_of_an_unbroken_one(scratch, scripts_txt, tmp_path):
    out, stats = scratch
    resumed = tmp_path / "tiny_bert"
    args = ["text", "pretrain", "--corpus", str(scripts_txt), "--out", str(resumed), *SCRATCH_FLAGS, "--quiet"]

    def epochs_done() -> int:
        written = resumed / "pretrain.json"
        return json.loads(written.read_text(encoding="utf-8"))["epochs_done"] if written.is_file() else 0

    kill_when(args, lambda: epochs_done() >= 3)
    assert epochs_done() < 6 and (tmp_path / ".tiny_bert.training" / "pretrain.safetensors").is_file()
    with pytest.raises(DataError, match=r"tiny_bert: its pre-training stopped after [345] of 6 epochs; finish it"):
        TextEncoder(resumed)  # the folder holds a model that loads, but not the one asked for
    main([*args, "--resume"])
    same_tensors(resumed / "model.safetensors", out / "model.safetensors")
    assert json.loads((resumed / "pretrain.json").read_text(encoding="utf-8"))["epoch_losses"] == stats["epoch_losses"]
    assert not (tmp_path / ".tiny_bert.training").exists()


def test_a_killed_cross_fitted_finetuning_resumes_to_the_classifier_of_an_unbroken_one(
    scratch, cross_fitted, demo_corpora, tmp_path, cli_error
):
    resumed, job = tmp_path / "classifier", tmp_path / ".classifier.training"
    args = ["text", "finetune", "--data", str(demo_corpora["script"]), "--encoder", str(scratch[0]),
            "--out", str(resumed), *FINETUNE_FLAGS, "--quiet"]  # fmt: skip
    # Killed in the second fold after its first epoch: the main fit done, the first fold's states
    # kept, the second fold part-trained; all three are taken up again.
    kill_when(args, lambda: saved_epoch(job / "cross-fit-2.safetensors") == 2)
    assert saved_epoch(job / "cross-fit-2.safetensors") == 2
    assert (job / "finetune.safetensors").is_file() and (job / "cross-fit-1" / OUT_OF_FOLD_STATES).is_file()
    assert not resumed.exists()

    code, printed = cli_error(*args[:-1], "--lr", "2e-3", "--resume")
    assert code == 2 and "hyperparameters.lr = 0.001 (now 0.002)" in printed

    main([*args, "--resume"])
    for name in ("model.safetensors", "classifier_head.safetensors", OUT_OF_FOLD_STATES):
        same_tensors(resumed / name, cross_fitted / name)
    figures = ["epoch", "train_loss", "dev_loss", "dev_accuracy", "dev_macro_f1", "lr"]
    pd.testing.assert_frame_equal(pd.read_csv(resumed / "epochs.csv")[figures], pd.read_csv(cross_fitted / "epochs.csv")[figures])
    assert not job.exists()


def test_scratch_masked_lm_loss_falls(scratch):
    out, stats = scratch
    losses = stats["epoch_losses"]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.3
    assert json.loads((out / "pretrain.json").read_text(encoding="utf-8"))["epoch_losses"] == losses
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))


def test_scratch_model_is_an_encoder_with_its_own_korean_vocabulary(scratch):
    out, _ = scratch
    encoder = TextEncoder(out, max_len=16)
    assert encoder.hidden_size == 256
    tokens = encoder.tokenizer.tokenize("시험 결과가 방금 나왔어요")
    assert "[UNK]" not in tokens and all(len(t.lstrip("#")) >= 1 for t in tokens)
    assert any("\uac00" <= ch <= "\ud7a3" for t in tokens for ch in t)  # syllables, not jamo
    long = " ".join(["시험 결과가 방금 나왔어요"] * 10)
    ids = encoder.tokenizer(long, truncation=True, max_length=16)["input_ids"]
    assert len(ids) == 16 and ids[0] == encoder.tokenizer.cls_token_id and ids[-1] == encoder.tokenizer.sep_token_id


def test_pretrained_directory_fine_tunes_with_mean_pooling(scratch, demo_corpus, tmp_path):
    out, _ = scratch
    metrics = finetune(demo_corpus, out, tmp_path / "clf", epochs=1, batch_size=32, max_len=32, progress=False)
    assert metrics["pooling"] == "mean"  # a masked-LM checkpoint has no pooler weights


def test_continued_pretraining_of_minilm_lowers_the_loss_and_writes_every_korean_word(tmp_path):
    # A sixth of the scripts: the 30,522-way masked-LM output makes every MiniLM step costly on CPU.
    sentences = load_demo_scripts()["sentence"][::6]
    corpus = tmp_path / "some_scripts.txt"
    corpus.write_text("\n".join(sentences), encoding="utf-8")
    out = tmp_path / "minilm_domain"
    stats = pretrain([corpus], None, out, epochs=2, lr=2e-4, batch_size=12, max_len=32, seed=0, progress=False)
    assert stats["epoch_losses"][-1] < stats["epoch_losses"][0]
    encoder = TextEncoder(out)
    assert encoder.hidden_size == 384
    assert "##ᆻ" in stats["added_tokens"]  # the final ㅆ of 했/있: absent from MiniLM's vocabulary
    assert encoder.model.get_input_embeddings().num_embeddings == len(encoder.tokenizer) == 30522 + len(stats["added_tokens"])
    ids = encoder.tokenizer(list(sentences))["input_ids"]
    assert not any(encoder.tokenizer.unk_token_id in row for row in ids)


def test_extending_the_vocabulary_removes_unknown_words_and_keeps_every_old_id():
    tokenizer, _ = load_text_encoder(default_encoder_path())
    old_vocab = tokenizer.get_vocab()
    sentence = "드디어 합격했어요 너무 기뻐요!"
    assert tokenizer.tokenize(sentence).count("[UNK]") == 2  # 합격했어요 and 기뻐요 are lost whole

    added = extend_vocabulary(tokenizer, [sentence])
    assert added == ["ᄈ", "##ᄈ", "ᆻ", "##ᆻ"]  # ㅃ of 뻐 and the final ㅆ of 했, as word start and continuation
    vocab = tokenizer.get_vocab()
    assert {token: vocab[token] for token in old_vocab} == old_vocab
    assert [vocab[token] for token in added] == list(range(len(old_vocab), len(old_vocab) + len(added)))
    tokens = tokenizer.tokenize(sentence)
    assert "[UNK]" not in tokens and "##ᆻ" in tokens
    assert extend_vocabulary(tokenizer, [sentence]) == []  # nothing left to add


def test_read_corpus_takes_text_and_pickles_distinct_and_normalised(demo_corpus, tmp_path):
    text = tmp_path / "lines.txt"
    text.write_text("안녕&amp;하세요\n\n안녕 하세요\n😀\n", encoding="utf-8")
    assert read_corpus([text]) == ["안녕 하세요"]
    from_pickle = read_corpus([demo_corpus / "train.pkl", demo_corpus / "train.pkl"])
    assert len(from_pickle) == len(set(from_pickle)) > 10
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_corpus([tmp_path / "missing.txt"])
    # A manifest gives its text column: line by line, its header, file names and labels were text too.
    manifest = tmp_path / "clips.csv"
    manifest.write_text("audio,text,label\nfear.wav,제발 불 좀 켜 줘.,공포\nb.wav,좋아!,행복\n", encoding="utf-8")
    assert read_corpus([manifest]) == ["제발 불 좀 켜 줘.", "좋아!"]


def test_transcript_noise_mishears_decomposed_hangul_as_composed():
    # NFD, as macOS writes it: jamo with no syllable to confuse, so the noise changed only spacing.
    sentences = ["정말 고마워요 오늘 너무 행복해요", "무서워 왜 이렇게 늦었어", "다 망쳤잖아 너 때문에"]
    decomposed = [unicodedata.normalize("NFD", s) for s in sentences]
    assert hangul_vocabulary(decomposed) == hangul_vocabulary(sentences) != frozenset()
    vocabulary = hangul_vocabulary(decomposed)
    for nfd, nfc in zip(decomposed, sentences):
        assert noisy_variants(nfd, vocabulary) == noisy_variants(nfc, vocabulary)


def test_wordpiece_learning_is_deterministic_and_breaks_ties_alphabetically():
    words = Counter({"cd": 3, "ab": 3})  # a tie: (a, ##b) and (c, ##d) both occur 3 times
    specials = ["[PAD]", "[UNK]"]
    alphabet = ["##b", "##d", "a", "c"]
    assert learn_wordpiece_vocabulary(words, 7, specials) == [*specials, *alphabet, "ab"]
    assert learn_wordpiece_vocabulary(words, 8, specials) == [*specials, *alphabet, "ab", "cd"]
    # No pair left that occurs twice: the vocabulary stops short of the size asked for.
    assert learn_wordpiece_vocabulary(words, 100, specials) == [*specials, *alphabet, "ab", "cd"]
    sentences = list(load_demo_scripts()["sentence"])
    first, second = (train_wordpiece(sentences, 800).get_vocab() for _ in range(2))
    assert first == second and len(first) == 800


def test_wordpiece_has_the_special_tokens_first():
    tokenizer = train_wordpiece(["오늘 날씨 좋다", "내일 날씨 흐림"] * 5, vocab_size=60)
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def test_mean_pooling_ignores_padding(scratch):
    out, _ = scratch
    tokenizer, encoder = load_text_encoder(out)
    model = SequenceClassifier(encoder, n_classes=7, pooling="mean", dropout=0.0).eval()
    sentences = ["무서워", "시험 결과가 방금 나왔어요 정말 너무 기뻐요"]
    alone = predict_sentences(tokenizer, model, sentences[:1], max_len=32)
    together = predict_sentences(tokenizer, model, sentences, max_len=32)  # the first is padded here
    assert torch.allclose(alone[0], together[0], atol=1e-5)
    assert not torch.allclose(together[0], together[1], atol=1e-3)


def test_cross_fitting_stores_each_training_sentence_from_an_encoder_that_did_not_see_it(
    scratch, cross_fitted, demo_corpora, tmp_path
):
    out, _ = scratch
    corpus, model_dir = demo_corpora["script"], cross_fitted
    assert (model_dir / OUT_OF_FOLD_STATES).is_file()

    train_split = load_any_split(corpus, "train", REFERENCE_LABELS, 48000, with_audio=False)
    train_sentences, _ = distinct_pairs(train_split)
    stored = load_out_of_fold_states(model_dir)
    vocabulary = hangul_vocabulary(train_split.sentences)
    variants = {normalize_text(v) for s in set(train_split.sentences) for v in noisy_variants(s, vocabulary)}
    assert set(stored) == set(train_sentences) | variants  # a sentence's recogniser transcripts too

    encoder = TextEncoder(model_dir, max_len=32)
    dev_sentence = load_any_split(corpus, "dev", REFERENCE_LABELS, 48000, with_audio=False).sentences[0]
    served, dev_states = encoder.encode([train_sentences[0], dev_sentence], progress=False)
    assert encoder.n_encoded == 1  # only the dev sentence ran through the encoder
    assert torch.equal(served, stored[train_sentences[0]])
    # The final encoder, trained on every sentence, gives other states than the fold that held it out.
    own = last_hidden_states(encoder.tokenizer, encoder.model, [train_sentences[0]], max_len=32)[train_sentences[0]]
    assert own.shape == served.shape and not torch.allclose(own, served, atol=1e-3)
    assert dev_states.shape[1] == encoder.hidden_size

    # The fold that held a sentence out, fine-tuned again on its own (same settings and seed, the
    # same sentences in the same order), gives exactly the stored states; the other fold, which
    # saw the sentence, would not.
    sentences, targets = distinct_pairs(load_any_split(corpus, "train", REFERENCE_LABELS, 48000, with_audio=False))
    kept, held_out = next(StratifiedKFold(n_splits=2, shuffle=True, random_state=0).split(sentences, targets))
    dev = load_any_split(corpus, "dev", REFERENCE_LABELS, 48000, with_audio=False)
    rows = [{"audio": "unread.wav", "text": sentences[i], "label": REFERENCE_LABELS[targets[i]], "split": "train"}
            for i in kept] + [{"audio": "unread.wav", "text": s, "label": REFERENCE_LABELS[y], "split": "dev"}
                              for s, y in zip(dev.sentences, dev.labels)]  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "fold.csv", index=False)
    finetune(tmp_path / "fold.csv", out, tmp_path / "fold", epochs=3, lr=1e-3, batch_size=32, max_len=32, seed=0,
             progress=False)  # fmt: skip
    fold = TextEncoder(tmp_path / "fold", max_len=32)
    for i in held_out[:5]:
        assert torch.allclose(fold.encode([sentences[i]], progress=False)[0], stored[sentences[i]], atol=1e-5)


def test_transcript_noise_on_a_cross_fitted_encoder_reads_only_out_of_fold_states(cross_fitted, demo_corpora, tmp_path):
    # A noisy transcript encoded by the final encoder, which learnt its sentence a syllable away,
    # would tell the model the label: every one must come from the fold that held its sentence out.
    cfg = RunConfig(name="text", data_path=str(demo_corpora["script"]), model=ModelConfig(modality="text"))
    encoder = TextEncoder(cross_fitted, max_len=32)
    noisy = load_encoded(cfg, "train", encoder, progress=False, transcript_noise=1.0)
    clean = load_encoded(cfg, "train", encoder, progress=False)
    assert encoder.n_encoded == 0
    changed = np.mean([noisy.text[noisy.text_index[i]].shape != clean.text[clean.text_index[i]].shape
                       or not torch.equal(noisy.text[noisy.text_index[i]], clean.text[clean.text_index[i]])
                       for i in range(len(clean))])  # fmt: skip
    assert changed > 0.5, changed  # the recogniser gets 15% of them verbatim

    # A cross-fitted folder without them (as fine-tuned before they were stored) is refused.
    older = tmp_path / "older"
    shutil.copytree(cross_fitted, older)
    train_split = load_any_split(cfg.data_path, "train", REFERENCE_LABELS, 48000, with_audio=False)
    sentences = set(distinct_pairs(train_split)[0])
    stored = load_out_of_fold_states(cross_fitted)
    save_out_of_fold_states(older, {s: t for s, t in stored.items() if s in sentences})
    with pytest.raises(DataError, match=r"older is cross-fitted but holds no out-of-fold states of the recogniser"):
        load_encoded(cfg, "train", TextEncoder(older, max_len=32), progress=False, transcript_noise=0.3)


def test_another_alphabet_than_fine_tuning_read_is_refused_where_it_would_miss_out_of_fold_states(cross_fitted, demo_corpora, tmp_path):
    # Keyed as the 'any' alphabet reads a sentence, its state was missed under 'korean' (which drops
    # vowel jamo such as ㅠ): the final encoder, which learnt the label, encoded it instead.
    jamo = tmp_path / "jamo"
    shutil.copytree(cross_fitted, jamo)
    train = load_any_split(demo_corpora["script"], "train", REFERENCE_LABELS, 48000, with_audio=False)
    first = train.sentences[0]
    inside = next(i for i in range(1, len(first)) if first[i - 1].isalpha() and first[i].isalpha())
    crying = first[:inside] + "ㅠ" + first[inside:]  # 'korean' splits the word at the ㅠ it drops
    stored = load_out_of_fold_states(cross_fitted)
    save_out_of_fold_states(jamo, {**stored, normalize_text(crying): TextEncoder(cross_fitted, max_len=32).encode([crying])[0]})
    split = dataclasses.replace(train, sentences=[crying, *train.sentences[1:]])
    assert normalize_text(crying, "korean") not in stored
    encoder = TextEncoder(jamo, max_len=32)
    refusal = r"train.pkl: row 0: the text encoder .*{} holds the out-of-fold state of .* Use --text_alphabet any with it"
    with pytest.raises(CorpusError, match=refusal.format("jamo")):
        encode_split(split, AudioConfig(), encoder, use_audio=False, progress=False, alphabet="korean")
    assert len(encode_split(split, AudioConfig(), encoder, use_audio=False, progress=False)) == len(train)
    assert encoder.n_encoded == 0  # every training sentence from its out-of-fold state

    # Keyed by an earlier audiotext, which read a zero-width space as a space: this one drops it.
    older = tmp_path / "older"
    shutil.copytree(cross_fitted, older)
    spaced = first[:inside] + "\u200b" + first[inside:]
    old_key = normalize_text(spaced, rule=1)
    assert old_key != normalize_text(spaced) and old_key not in stored
    # Fine-tuned on the sentence as written with it, the encoder holds no state of it without.
    states = {**{k: t for k, t in stored.items() if k != first}, old_key: TextEncoder(cross_fitted, max_len=32).encode([old_key])[0]}
    save_file({str(i): t.contiguous() for i, t in enumerate(states.values())}, older / OUT_OF_FOLD_STATES,
              metadata={"sentences": json.dumps(list(states), ensure_ascii=False)})  # as written before the rule was recorded
    split = dataclasses.replace(train, sentences=[spaced, *train.sentences[1:]])
    with pytest.raises(CorpusError, match=refusal.format("older")):
        encode_split(split, AudioConfig(), TextEncoder(older, max_len=32), use_audio=False, progress=False)


def test_onnx_refuses_a_training_sentence_of_a_cross_fitted_encoder_and_agrees_on_others(cross_fitted, demo_corpora, tmp_path):
    # The graph runs the final encoder; PyTorch reads a training sentence's out-of-fold state: they differed.
    corpus = demo_corpora["script"]
    main(["train", "--data_path", str(corpus), "--output_dir", str(tmp_path), "--name", "txt", "--do_text",
          "--bert_model_path", str(cross_fitted), "--max_len_for_text", "32", "--num_epochs", "1", "--quiet"])  # fmt: skip
    model = export_model(tmp_path / "txt", tmp_path / "model", onnx=True)
    in_torch = EmotionRecognizer.from_pretrained(model, device="cpu")
    in_onnx = EmotionRecognizer.from_pretrained(model, backend="onnx")
    clip = {"raw": np.zeros(4800, np.int16), "sampling_rate": 48000}  # a text model only checks it
    trained_on = load_any_split(corpus, "train", REFERENCE_LABELS, 48000, with_audio=False).sentences[0]
    with pytest.raises(DataError, match=f"{trained_on!r} is a training sentence of the cross-fitted text encoder"):
        in_onnx.predict(clip, text=trained_on)
    unseen = load_any_split(corpus, "test", REFERENCE_LABELS, 48000, with_audio=False).sentences[0]
    np.testing.assert_allclose(in_onnx.predict_proba([clip], [unseen]), in_torch.predict_proba([clip], [unseen]), atol=1e-4)


def test_a_text_job_checks_its_out_folder_before_it_trains(demo_corpus, scripts_txt, tmp_path, cli_error):
    # Checked when it saved, a folder of runs given by mistake was found out after the training.
    filled = tmp_path / "runs"
    filled.mkdir()
    (filled / "notes.txt").write_text("mine", encoding="utf-8")
    finetune_args = ["text", "finetune", "--data", demo_corpus, "--out", filled, "--epochs", "1", "--quiet"]
    code, printed = cli_error(*finetune_args)
    assert code == 2 and printed == (f"error: --out {filled} already holds files: --overwrite replaces a model "
                                     "folder there, --resume continues a stopped job\n")  # fmt: skip
    code, printed = cli_error(*finetune_args, "--overwrite")
    assert code == 1 and printed.startswith(f"error: refusing to replace --out {filled}: it exists and is not a model")
    # A run folder (or an exported model folder) has a config.json too: --overwrite wiped it.
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "finished.json", "model.safetensors"):
        (run / name).write_text("{}", encoding="utf-8")
    code, printed = cli_error("text", "pretrain", "--corpus", scripts_txt, "--out", run, "--overwrite")
    assert code == 1 and printed.startswith(f"error: refusing to replace --out {run}: it exists and is not a model")
    assert sorted(path.name for path in run.iterdir()) == ["config.json", "finished.json", "model.safetensors"]
    code, printed = cli_error("text", "pretrain", "--corpus", scripts_txt, "--out", filled, "--resume", "--overwrite")
    assert code == 2 and printed.endswith("give one of them\n")
    # With no stopped job beside it, --resume would start one afresh and replace the folder at its end.
    code, printed = cli_error(*finetune_args, "--resume")
    assert code == 2 and printed == (f"error: --resume: no stopped job writes --out {filled} (none in "
                                     f"{tmp_path / '.runs.training'}), and it already holds files: --overwrite "
                                     "replaces a model folder there\n")  # fmt: skip
    assert [path.name for path in filled.iterdir()] == ["notes.txt"]
    # Continued in place, a job stopped after its first save had replaced the encoder it resumes from.
    code, printed = cli_error("text", "pretrain", "--corpus", scripts_txt, "--encoder", run, "--out", run, "--overwrite")
    assert code == 2 and printed == (f"error: --out {run} is (or holds, or lies in) the --encoder {run} the job "
                                     "starts from: write the new encoder to another folder\n")  # fmt: skip


def test_cross_fitting_needs_two_folds_with_every_label(scratch, demo_corpus, tmp_path):
    out, _ = scratch
    with pytest.raises(ValueError, match="at least 2"):
        finetune(demo_corpus, out, tmp_path / "m", epochs=1, cross_fit_folds=1, progress=False)
    with pytest.raises(ValueError, match="rarest label"):
        finetune(demo_corpus, out, tmp_path / "m", epochs=1, cross_fit_folds=1000, progress=False)
    with pytest.raises(ValueError, match="has only 0 training sentences of its rarest label"):  # a label none has
        finetune(demo_corpus, out, tmp_path / "m", labels=[*REFERENCE_LABELS, "지루함"], epochs=1, cross_fit_folds=2,
                 progress=False)  # fmt: skip
