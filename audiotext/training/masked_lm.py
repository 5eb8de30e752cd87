"""Domain pre-training: masked-LM training continued on in-domain text, as the reference did before
fine-tuning; or, with `new_tokenizer_vocab_size`, a WordPiece vocabulary trained on the corpus and a
small BERT trained from scratch on it.

Continued training first extends the encoder's WordPiece vocabulary with every character of the
corpus it cannot write. An English vocabulary such as the packaged MiniLM's splits Hangul into
conjoining jamo but lacks many of them (most final consonants: 했, 있, 좋), so about 30% of
Korean words become a single [UNK]; with the missing jamo added (as word starts and as ##
continuations) no word is lost, and masked-LM training learns the new embedding rows.

The output is a Hugging Face directory (BertForMaskedLM, safetensors, tokenizer), written after
every epoch, that `finetune` and `TextEncoder` accept as an encoder. The training state is kept
beside it (`.NAME.training`) until the last epoch, so that a stopped job resumes (`resume`).

Shape legend: B sentences in a batch, L tokens, V vocabulary.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from tokenizers import models, normalizers, pre_tokenizers
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertTokenizer,
    DataCollatorForLanguageModeling,
    PreTrainedTokenizerBase,
)

from audiotext.data.manifest import is_manifest, read_manifest
from audiotext.features.encoders import PRETRAIN_RECORD, load_text_encoder, save_directory
from audiotext.features.text import check_sentence_length, default_encoder_path, normalize_text
from audiotext.io import folder_digest, json_digest
from audiotext.runtime import on_main, processes
from audiotext.training.engine import Engine, EngineSettings, check_job_settings
from audiotext.training.run_folder import claim_state_folder

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# A from-scratch model small enough to train on a few hundred sentences on two CPU cores.
TINY_BERT = dict(
    hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024, max_position_embeddings=128
)


def read_corpus(files: Sequence[str | Path]) -> list[str]:
    """Distinct normalised sentences from text files (one a line), split pickles (their
    Sentence/sentence column) and manifests (their text column), in first-seen order."""
    sentences: list[str] = []
    for file in map(Path, files):
        if not file.is_file():
            raise FileNotFoundError(f"pre-training corpus {file}: no such file")
        if file.suffix == ".pkl":
            frame = pd.read_pickle(file)
            column = next((c for c in ("Sentence", "sentence") if c in frame.columns), None)
            if column is None:
                raise ValueError(f"{file}: no Sentence or sentence column (found {', '.join(map(str, frame.columns))})")
            lines = frame[column].astype(str).tolist()
        elif is_manifest(file):  # read line by line, its header, file names and labels would be text
            lines = read_manifest(file, required=("text",))["text"].tolist()
        else:
            lines = file.read_text(encoding="utf-8").splitlines()
        sentences += [normalize_text(line) for line in lines]
    distinct = [s for s in dict.fromkeys(sentences) if s]
    if not distinct:
        raise ValueError(f"pre-training corpus {', '.join(map(str, files))} holds no text")
    return distinct


def train_wordpiece(sentences: Sequence[str], vocab_size: int) -> BertTokenizer:
    """A cased WordPiece vocabulary learned on `sentences` (Hangul syllables kept whole)."""
    normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words = Counter(
        word for sentence in sentences for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(sentence))
    )
    vocab = learn_wordpiece_vocabulary(words, vocab_size, SPECIAL_TOKENS)
    return BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=False, strip_accents=False)


def learn_wordpiece_vocabulary(
    words: Counter[str], vocab_size: int, special_tokens: Sequence[str] = SPECIAL_TOKENS, prefix: str = "##"
) -> list[str]:
    """WordPiece tokens learnt by byte-pair merges, as tokenizers' WordPieceTrainer learns them:
    every character (word-initial, and `prefix`-marked inside a word), then the most frequent
    adjacent pair merged again and again until `vocab_size` tokens or no pair occurs twice.

    Why not that trainer: it breaks ties between equally frequent pairs by ids given in hash order,
    so two runs on the same sentences learn different vocabularies (and different models). Here ties
    go to the alphabetically first pair, and a seed gives the same tokenizer every time.
    """
    entries = sorted(words.items())
    pieces = [[word[0], *(prefix + char for char in word[1:])] for word, _ in entries]
    counts = [count for _, count in entries]
    vocab = list(dict.fromkeys([*special_tokens, *sorted({piece for word in pieces for piece in word})]))
    known = set(vocab)
    pair_counts: Counter[tuple[str, str]] = Counter()
    words_with: dict[tuple[str, str], set[int]] = defaultdict(set)

    def count_pairs(i: int, sign: int) -> None:
        for pair in zip(pieces[i], pieces[i][1:]):
            pair_counts[pair] += sign * counts[i]
            if sign > 0:
                words_with[pair].add(i)

    for i in range(len(pieces)):
        count_pairs(i, +1)
    while len(vocab) < vocab_size:
        pair_counts = +pair_counts  # drops pairs counted down to zero
        if not pair_counts:
            break
        (left, right), count = min(pair_counts.items(), key=lambda item: (-item[1], item[0]))
        if count < 2:
            break
        merged = left + right[len(prefix) :]
        if merged not in known:
            vocab.append(merged)
            known.add(merged)
        for i in sorted(words_with.pop((left, right))):
            count_pairs(i, -1)
            word, joined = pieces[i], []
            while word:
                if len(word) > 1 and (word[0], word[1]) == (left, right):
                    joined.append(merged)
                    word = word[2:]
                else:
                    joined.append(word[0])
                    word = word[1:]
            pieces[i] = joined
            count_pairs(i, +1)
    return vocab


def extend_vocabulary(tokenizer: PreTrainedTokenizerBase, sentences: Sequence[str]) -> list[str]:
    """Adds to a WordPiece tokenizer every character of `sentences` that its vocabulary lacks, as a
    word start and as a ## continuation, so that no word of them tokenizes to [UNK]. Characters are
    seen as the tokenizer sees them (after its normalizer: lower-cased, NFD). Returns the tokens
    added, in the order of their new ids; the model's embeddings must then be resized."""
    backend = tokenizer.backend_tokenizer
    if not isinstance(backend.model, models.WordPiece):
        raise ValueError(
            f"vocabulary extension needs a WordPiece tokenizer, not {type(backend.model).__name__}; "
            "pre-train without it (--keep-vocab)"
        )
    prefix = backend.model.continuing_subword_prefix
    characters: set[str] = set()
    for sentence in sentences:
        normalized = backend.normalizer.normalize_str(sentence) if backend.normalizer else sentence
        for word, _ in backend.pre_tokenizer.pre_tokenize_str(normalized):
            characters.update(word)
    vocab = dict(sorted(backend.get_vocab(with_added_tokens=False).items(), key=lambda item: item[1]))
    added = [token for char in sorted(characters) for token in (char, prefix + char) if token not in vocab]
    if added:
        vocab.update({token: len(vocab) + i for i, token in enumerate(added)})
        backend.model = models.WordPiece(
            vocab=vocab, unk_token=backend.model.unk_token, continuing_subword_prefix=prefix,
            max_input_chars_per_word=backend.model.max_input_chars_per_word,
        )  # fmt: skip
    return added


def pretrain(
    corpus_files: Sequence[str | Path],
    encoder: str | Path | None,
    out_dir: str | Path,
    epochs: int = 5,
    lr: float = 5e-5,
    batch_size: int = 32,
    mlm_probability: float = 0.15,
    warmup_percent: float = 0.1,
    seed: int = 1111,
    new_tokenizer_vocab_size: int | None = None,
    extend_vocab: bool = True,
    max_len: int = 64,
    no_cuda: bool = False,
    progress: bool = True,
    resume: bool = False,
) -> dict:
    """Masked-LM training on the distinct sentences of `corpus_files`; the model is saved to
    `out_dir` after every epoch. Returns per-epoch mean losses and run facts.

    `encoder`: a Hugging Face or legacy directory to continue from (None = packaged MiniLM); it is
    ignored when `new_tokenizer_vocab_size` asks for a new vocabulary and a tiny BERT from scratch.
    Masking is BERT's: 15% of tokens, of which 80% become [MASK], 10% a random token, 10% stay.
    With `extend_vocab` the encoder's vocabulary first gains the characters the corpus needs
    (see `extend_vocabulary`). `resume` continues the job a stopped call with the same arguments
    left beside `out_dir`.
    """
    check_job_settings(epochs, batch_size, lr)
    if not 0 < mlm_probability < 1:  # 0 masks nothing, so no loss to average
        raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
    check_sentence_length(max_len)
    started = time.perf_counter()
    engine = Engine(
        EngineSettings(name="pretrain", epochs=epochs, seed=seed, clip=1.0, warmup_percent=warmup_percent,
                       schedule="linear", no_cuda=no_cuda, progress=progress)  # fmt: skip
    )
    sentences = read_corpus(corpus_files)
    added: list[str] = []
    encoder_path = None
    if new_tokenizer_vocab_size is not None:
        tokenizer = train_wordpiece(sentences, new_tokenizer_vocab_size)
        config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **TINY_BERT)
        model, source = BertForMaskedLM(config), f"scratch ({len(tokenizer)}-token WordPiece)"
    else:
        encoder_path = default_encoder_path() if encoder is None else Path(encoder)
        tokenizer, model = load_text_encoder(encoder_path, BertForMaskedLM)
        source = str(encoder_path)
        if extend_vocab:
            added = extend_vocabulary(tokenizer, sentences)
            # New rows start at the mean of the old ones (transformers' default), not at random.
            model.resize_token_embeddings(len(tokenizer))
            if progress and added:
                tqdm.write(f"vocabulary: added {len(added)} tokens the corpus needs: {' '.join(added)}")
    model.to(engine.device)
    max_len = min(max_len, model.config.max_position_embeddings)
    ids = tokenizer(sentences, truncation=True, max_length=max_len)["input_ids"]
    # input_ids and labels (B, L); labels are -100 except where a token was picked for masking. The
    # masks are drawn from the global generator, which the engine seeds and a resumed job restores.
    masking = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability)
    batches = DataLoader([{"input_ids": i} for i in ids], batch_size=batch_size, shuffle=True, collate_fn=masking,
                         generator=torch.Generator().manual_seed(seed))  # fmt: skip
    hyperparameters = dict(
        epochs=epochs, lr=lr, batch_size=batch_size, mlm_probability=mlm_probability, max_len=max_len,
        warmup_percent=warmup_percent, seed=seed, new_tokenizer_vocab_size=new_tokenizer_vocab_size,
        extend_vocab=extend_vocab,
    )  # fmt: skip
    job = {"hyperparameters": hyperparameters, "encoder": folder_digest(encoder_path) if encoder_path else "scratch",
           "corpus": json_digest(sentences)}  # fmt: skip
    job_folder = on_main(lambda: claim_state_folder(Path(out_dir), job, resume))
    stats: dict = {}

    def save_epoch(rows: list[dict]) -> None:
        stats.update(source=source, sentences=len(sentences), added_tokens=added, epochs_done=len(rows),
                     epoch_losses=[row["train_loss"] for row in rows], hyperparameters=hyperparameters)  # fmt: skip
        _save(out_dir, tokenizer, model, stats)

    engine.fit(
        model,
        torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01),
        batches,
        loss=lambda m, batch: m(**batch).loss,
        row_weights=lambda batch: (batch["labels"] != -100).sum(-1),  # the loss is a mean over masked tokens
        on_epoch=save_epoch,
        checkpoint=job_folder / "pretrain.safetensors",
        data_order=batches.generator,
    )
    if processes().is_main:
        shutil.rmtree(job_folder)
    return {**stats, "model_dir": str(out_dir), "seconds": time.perf_counter() - started}


def _save(out_dir: str | Path, tokenizer: BertTokenizer, model: BertForMaskedLM, stats: dict) -> None:
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)  # config.json + model.safetensors
        tokenizer.save_pretrained(tmp)
        (tmp / PRETRAIN_RECORD).write_text(json.dumps(stats, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")

    save_directory(out_dir, write)
