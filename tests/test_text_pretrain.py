"""Domain pre-training: masked-LM loss falls on the demo scripts, both continuing the packaged
MiniLM and from scratch on a WordPiece vocabulary learned from the corpus; the output directory
serves as an encoder for fine-tuning and for the cross-modal model."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch
from sklearn.model_selection import StratifiedKFold

from audiotext.config import REFERENCE_LABELS
from audiotext.data.manifest import load_any_split
from audiotext.data.synthesis import load_demo_scripts
from audiotext.features.encoders import load_text_encoder
from audiotext.features.text import (
    OUT_OF_FOLD_STATES,
    TextEncoder,
    default_encoder_path,
    last_hidden_states,
    load_out_of_fold_states,
)
from audiotext.inference.predict import predict_sentences
from audiotext.models.text_classifier import SequenceClassifier
from audiotext.training.masked_lm import (
    extend_vocabulary,
    learn_wordpiece_vocabulary,
    pretrain,
    read_corpus,
    train_wordpiece,
)
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


def test_cross_fitting_stores_each_training_sentence_from_an_encoder_that_did_not_see_it(scratch, demo_corpora, tmp_path):
    out, _ = scratch
    corpus = demo_corpora["script"]
    model_dir = tmp_path / "cross_fitted"
    info = finetune(corpus, out, model_dir, epochs=2, lr=1e-3, batch_size=32, max_len=32, seed=0,
                       cross_fit_folds=2, progress=False)  # fmt: skip
    assert info["cross_fit_folds"] == 2 and (model_dir / OUT_OF_FOLD_STATES).is_file()

    train_sentences, _ = distinct_pairs(load_any_split(corpus, "train", REFERENCE_LABELS, 48000, with_audio=False))
    stored = load_out_of_fold_states(model_dir)
    assert sorted(stored) == sorted(train_sentences)

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
    finetune(tmp_path / "fold.csv", out, tmp_path / "fold", epochs=2, lr=1e-3, batch_size=32, max_len=32, seed=0,
             progress=False)  # fmt: skip
    fold = TextEncoder(tmp_path / "fold", max_len=32)
    for i in held_out[:5]:
        assert torch.allclose(fold.encode([sentences[i]], progress=False)[0], stored[sentences[i]], atol=1e-5)


def test_cross_fitting_needs_two_folds_with_every_label(scratch, demo_corpus, tmp_path):
    out, _ = scratch
    with pytest.raises(ValueError, match="at least 2"):
        finetune(demo_corpus, out, tmp_path / "m", epochs=1, cross_fit_folds=1, progress=False)
    with pytest.raises(ValueError, match="rarest label"):
        finetune(demo_corpus, out, tmp_path / "m", epochs=1, cross_fit_folds=1000, progress=False)
