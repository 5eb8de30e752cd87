"""The model settings of the demo these benchmarks measured (before `make demo` became
`audiotext compare`), kept here so that their figures in benchmarks/README.md can be re-run."""

from dataclasses import dataclass, replace

from audiotext.config import AudioConfig, ModelConfig, TrainConfig


@dataclass(frozen=True)
class DemoModel:
    title: str
    run: str  # folder name of its runs
    config: ModelConfig


# 8 kHz MFCCs as in the reference's scripts, 8 epochs, no attention dropout (PyTorch's fused kernel).
DEMO_AUDIO = AudioConfig(resample_rate=8000)
DEMO_TRAINING = TrainConfig(num_epochs=8, when=3)
# The packaged MiniLM reads English: the demo built a Korean BERT from a WordPiece vocabulary of 500
# tokens (about the corpus's syllables) learned on the training sentences, pre-trained with masked LM.
DEMO_PRETRAIN = dict(new_tokenizer_vocab_size=500, epochs=30, lr=1e-3, batch_size=32, max_len=48)
DEMO_FINETUNE = dict(epochs=20, lr=1e-3, batch_size=16, max_len=48)
# A linear layer on frozen features costs nothing per epoch: trained to convergence.
FROZEN_TEXT_TRAINING = replace(DEMO_TRAINING, num_epochs=40)
FROZEN_TEXT = DemoModel("text-only: frozen MiniLM + linear", "text_frozen", ModelConfig(modality="text", out_dropout=0.1))
AUDIO = DemoModel(
    "audio-only", "audio", ModelConfig(modality="audio", attn_dropout=0.0, embed_dropout=0.1, out_dropout=0.1)
)
CROSS = DemoModel(
    "cross-modal (fine-tuned encoder)", "cross", ModelConfig(modality="cross", attn_dropout=0.0, out_dropout=0.1)
)
