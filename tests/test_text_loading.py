"""Loading text encoders: a legacy KorBERT-layout checkpoint built from the packaged MiniLM gives
the same hidden states as the Hugging Face directory; a Korean vocabulary keeps its syllables;
unusable checkpoints fail naming the problem."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertForMaskedLM, BertModel

from audiotext.errors import DataError
from audiotext.features.encoders import (
    CheckpointShapeError,
    load_text_encoder,
    load_text_encoder_with_report,
    read_vocab,
    save_directory,
)
from audiotext.features.text import TextEncoder, default_encoder_path

SENTENCES = ["오늘은 정말 행복한 하루였어요!", "I can't believe it.", "무서워 왜 이렇게 늦었어?"]


def write_legacy(out: Path, classic_names: bool = True, vocab_name: str = "vocab.korean.rawtext.list") -> Path:
    """The reference's layout from the MiniLM weights: bert_config.json, a torch.save'd plain state
    dict with `bert.`-prefixed classic keys plus an `fc.` classifier head, and an ETRI-style vocab."""
    src = default_encoder_path()
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads((src / "config.json").read_text())
    classic = {k: config[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                      "intermediate_size", "hidden_act", "hidden_dropout_prob",
                                      "attention_probs_dropout_prob", "max_position_embeddings",
                                      "type_vocab_size", "initializer_range")}  # fmt: skip
    (out / "bert_config.json").write_text(json.dumps(classic))
    state = {}
    for key, tensor in load_file(src / "model.safetensors").items():
        if classic_names:
            key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        state["bert." + key] = tensor
    state["fc.weight"], state["fc.bias"] = torch.zeros(7, config["hidden_size"]), torch.zeros(7)
    torch.save(state, out / "pytorch_model.bin")
    tokens = (src / "vocab.txt").read_text(encoding="utf-8").splitlines()
    if vocab_name == "vocab.korean.rawtext.list":
        lines = ["n_iters=10", "max_length=64", *(f"{t}\t{1000 - i}" for i, t in enumerate(tokens))]
    else:
        lines = tokens
    (out / vocab_name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def legacy_dir(tmp_path_factory) -> Path:
    return write_legacy(tmp_path_factory.mktemp("legacy") / "etri")


def hidden_states(tokenizer, model, sentences) -> torch.Tensor:
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return model.eval()(**batch).last_hidden_state


def test_legacy_layout_gives_the_same_hidden_states(legacy_dir):
    hf_tok, hf_model = load_text_encoder(default_encoder_path())
    with pytest.warns(UserWarning, match="fc.weight"):
        tok, model = load_text_encoder(legacy_dir)
    assert tok(SENTENCES)["input_ids"] == hf_tok(SENTENCES)["input_ids"]
    legacy, reference = hidden_states(tok, model, SENTENCES), hidden_states(hf_tok, hf_model, SENTENCES)
    torch.testing.assert_close(legacy, reference, rtol=0, atol=1e-5)


def test_report_names_unused_head_and_nothing_missing(legacy_dir):
    _, _, report = load_text_encoder_with_report(legacy_dir)
    assert report.layout == "legacy"
    assert report.missing_keys == []
    assert report.unexpected_keys == ["fc.bias", "fc.weight"]


def test_legacy_into_masked_lm_reports_the_missing_head(legacy_dir):
    _, model, report = load_text_encoder_with_report(legacy_dir, BertForMaskedLM)
    assert isinstance(model, BertForMaskedLM)
    assert any(k.startswith("cls.predictions.transform") for k in report.missing_keys)
    assert not any(k.startswith("bert.") for k in report.missing_keys)
    # The decoder is tied to the loaded word embeddings.
    assert model.cls.predictions.decoder.weight.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()


def test_text_encoder_accepts_a_legacy_directory(legacy_dir):
    legacy, hf = TextEncoder(legacy_dir), TextEncoder(None)
    for a, b in zip(legacy.encode(SENTENCES, progress=False), hf.encode(SENTENCES, progress=False)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_plain_vocab_txt_and_modern_names_load(tmp_path):
    legacy = write_legacy(tmp_path / "plain", classic_names=False, vocab_name="vocab.txt")
    _, _, report = load_text_encoder_with_report(legacy)
    assert report.missing_keys == []


def test_etri_vocab_headers_and_counts_are_skipped(tmp_path):
    vocab = tmp_path / "vocab.korean.rawtext.list"
    vocab.write_text("n_iters=3\nmax_length=64\n[PAD]\t0\n[UNK]\t0\n안녕_\t12\n", encoding="utf-8")
    assert read_vocab(vocab) == {"[PAD]": 0, "[UNK]": 1, "안녕_": 2}


def test_shape_mismatch_names_key_and_shapes(tmp_path, legacy_dir):
    broken = Path(shutil.copytree(legacy_dir, tmp_path / "broken"))
    state = torch.load(broken / "pytorch_model.bin", weights_only=True)
    state["bert.encoder.layer.0.attention.self.query.weight"] = torch.zeros(384, 100)
    torch.save(state, broken / "pytorch_model.bin")
    expected = r"encoder\.layer\.0\.attention\.self\.query\.weight.*\(384, 100\).*\(384, 384\)"
    with pytest.raises(CheckpointShapeError, match=expected):
        load_text_encoder(broken)


def test_missing_files_are_named(tmp_path, legacy_dir):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_text_encoder(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_text_encoder(tmp_path)
    no_weights = Path(shutil.copytree(legacy_dir, tmp_path / "no_weights"))
    (no_weights / "pytorch_model.bin").unlink()
    with pytest.raises(DataError, match="pytorch_model.bin or best_model.bin"):
        load_text_encoder(no_weights)
    no_vocab = Path(shutil.copytree(legacy_dir, tmp_path / "no_vocab"))
    (no_vocab / "vocab.korean.rawtext.list").unlink()
    with pytest.raises(DataError, match="vocab"):
        load_text_encoder(no_vocab)


def test_a_broken_encoder_folder_is_named_not_a_traceback(tmp_path, legacy_dir):
    cut = Path(shutil.copytree(default_encoder_path(), tmp_path / "cut"))
    weights = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(DataError, match=f"text encoder {cut}: cannot be loaded"):  # a SafetensorError before
        load_text_encoder(cut)
    other = Path(shutil.copytree(default_encoder_path(), tmp_path / "other"))
    save_file({"unrelated": torch.zeros(1)}, other / "model.safetensors")  # loaded with a warning, as a random encoder
    with pytest.raises(DataError, match=r"101 of the encoder's own weights are not in its checkpoint \(embeddings"):
        load_text_encoder(other)
    text = Path(shutil.copytree(legacy_dir, tmp_path / "text"))
    for content in ("not weights", ""):  # an UnpicklingError, an EOFError
        (text / "pytorch_model.bin").write_text(content)
        with pytest.raises(DataError, match=f"text encoder {text}: cannot be loaded"):
            load_text_encoder(text)
    grown = Path(shutil.copytree(default_encoder_path(), tmp_path / "grown"))
    vocab = (grown / "vocab.txt").read_text(encoding="utf-8")
    (grown / "vocab.txt").write_text(vocab + "".join(f"새{i}\n" for i in range(50)), encoding="utf-8")
    (grown / "tokenizer.json").unlink()  # rebuilt from vocab.txt: 50 tokens past the embeddings
    with pytest.raises(CheckpointShapeError, match="the tokenizer has 30572 tokens but the model 30522 embeddings"):
        load_text_encoder(grown)  # an IndexError in the first long enough batch before
    with pytest.raises(ValueError, match="max_len 1000 is longer than the text encoder .* reads \\(512 positions\\)"):
        TextEncoder(None, max_len=1000)


def test_pickled_objects_are_refused(tmp_path, legacy_dir):
    unsafe = Path(shutil.copytree(legacy_dir, tmp_path / "unsafe"))
    torch.save({"model": torch.nn.Linear(2, 2)}, unsafe / "pytorch_model.bin")  # a whole pickled module
    with pytest.raises(Exception, match="[Ww]eights only"):
        load_text_encoder(unsafe)


def test_save_directory_replaces_whole_and_cleans_up_on_failure(tmp_path):
    def write(*names: str) -> Callable[[Path], None]:
        return lambda d: [(d / name).write_text("{}") for name in names]

    out = tmp_path / "model"
    save_directory(out, write("tokenizer_config.json", "a.txt"))
    save_directory(out, write("tokenizer_config.json", "b.txt"))
    assert sorted(p.name for p in out.iterdir()) == ["b.txt", "tokenizer_config.json"]

    def fail(d: Path) -> None:
        (d / "c.txt").write_text("3")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_directory(out, fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert sorted(p.name for p in out.iterdir()) == ["b.txt", "tokenizer_config.json"]


def test_save_directory_never_replaces_a_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "other_run.csv").write_text("keep me")
    with pytest.raises(FileExistsError, match="runs"):
        save_directory(tmp_path / "runs", lambda d: (d / "config.json").write_text("{}"))
    assert (tmp_path / "runs" / "other_run.csv").read_text() == "keep me"


def test_legacy_tokenizer_truncation_keeps_cls_and_sep(legacy_dir):
    tok, _ = load_text_encoder(legacy_dir)
    ids = tok(" ".join(["I can't believe it"] * 30), truncation=True, max_length=16)["input_ids"]
    assert len(ids) == 16 and ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id


def test_huggingface_shape_mismatch_names_key_and_shapes(tmp_path):
    broken = Path(shutil.copytree(default_encoder_path(), tmp_path / "hf"))
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "intermediate_size": 1000}))
    with pytest.raises(CheckpointShapeError, match=r"intermediate\.dense\.bias has shape \(1536,\).*\(1000,\)"):
        load_text_encoder(broken)


def write_tiny_legacy(out: Path, tokens: list[str]) -> Path:
    """A one-layer, 8-wide BERT in the reference's layout with `tokens` as its ETRI vocabulary."""
    config = dict(vocab_size=len(tokens), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=16, max_position_embeddings=32, type_vocab_size=2)  # fmt: skip
    out.mkdir()
    (out / "bert_config.json").write_text(json.dumps(config))
    model = BertModel(BertConfig(**config))
    torch.save({"bert." + k: v for k, v in model.state_dict().items()}, out / "pytorch_model.bin")
    (out / "vocab.korean.rawtext.list").write_text("\n".join(f"{t}\t1" for t in tokens) + "\n", encoding="utf-8")
    return out


def test_a_korean_syllable_vocabulary_keeps_its_syllables_and_capitals_make_it_cased(tmp_path):
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    korean = write_tiny_legacy(tmp_path / "korean", [*special, "행", "##복", "##해", "##요", "무", "##서", "##워", "hello"])
    tokenizer, _ = load_text_encoder(korean)
    # Accent stripping (NFD) would break each syllable into jamo the vocabulary does not have.
    assert tokenizer.tokenize("행복해요 무서워 HELLO") == ["행", "##복", "##해", "##요", "무", "##서", "##워", "hello"]
    cased = write_tiny_legacy(tmp_path / "cased", [*special, "Hello", "hello"])
    tokenizer, _ = load_text_encoder(cased)
    assert tokenizer.tokenize("Hello hello HELLO") == ["Hello", "hello", "[UNK]"]


def test_a_folder_whose_tokenizer_cannot_read_its_own_words_is_refused(tmp_path):
    # transformers loads both without a word; every sentence would then encode as [UNK]s.
    no_tokenizer = tmp_path / "no_tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        (no_tokenizer / name).symlink_to(default_encoder_path() / name)
    with pytest.raises(DataError, match="no_tokenizer: its tokenizer holds no word, only 5 special tokens"):
        TextEncoder(no_tokenizer)

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "행", "##복", "무", "##서", "너", "때", "문", "다", "hello"]
    korean = tmp_path / "korean"
    BertModel(BertConfig(vocab_size=len(tokens), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16, max_position_embeddings=32)).save_pretrained(korean)  # fmt: skip
    (korean / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    # Without tokenizer_config.json: lower-casing and accent stripping (NFD) break 행 into jamo.
    with pytest.raises(DataError, match=r"korean: its tokenizer reads 6 of 6 of its own hangul words as \[UNK\] \(e\.g\. '행'"):
        TextEncoder(korean, max_len=16)
    (korean / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False, "strip_accents": False}))
    assert TextEncoder(korean, max_len=16).tokenizer.tokenize("행복 hello") == ["행", "##복", "hello"]

    # A multilingual vocabulary, Hangul a fifth of its words: counted over all words, most read well.
    latin = ["".join(letters) for letters in itertools.product("abcde", repeat=3)][:100]
    hangul = [chr(0xAC00 + 97 * i) for i in range(25)]
    mixed = tmp_path / "mixed"
    tokens = [*tokens[:5], *latin, *hangul]
    BertModel(BertConfig(vocab_size=len(tokens), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16, max_position_embeddings=32)).save_pretrained(mixed)  # fmt: skip
    (mixed / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"mixed: its tokenizer reads 25 of 25 of its own hangul words as \[UNK\]"):
        TextEncoder(mixed, max_len=16)
