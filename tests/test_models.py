"""Model shapes, gradient flow, and the property the reference lacked: padding never matters."""

import numpy as np
import pytest
import torch

from audiotext.config import MERGES, MODALITIES, ModelConfig
from audiotext.models.blocks import TransformerBlock, attention_bias, causal_mask, sinusoidal_positions
from audiotext.models.classifiers import Dims, build_model, merge_over_time

F_MFCC, E_TEXT = 40, 32
DIMS = Dims(audio=F_MFCC, text=E_TEXT, classes=7)


def tiny_model(modality: str, **overrides):
    torch.manual_seed(0)  # the same weights whichever tests ran before: tolerances below were set on them
    return build_model(ModelConfig(**{**dict(modality=modality, d_model=20, layers=2, num_heads=4), **overrides}), DIMS)


def batch_with_lengths(audio_lengths, text_lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, t, l = len(audio_lengths), max(audio_lengths), max(text_lengths)
    audio_mask = torch.arange(t)[None] < torch.tensor(audio_lengths)[:, None]
    text_mask = torch.arange(l)[None] < torch.tensor(text_lengths)[:, None]
    audio = torch.randn(b, t, F_MFCC, generator=g) * audio_mask[..., None]
    text = torch.randn(b, l, E_TEXT, generator=g) * text_mask[..., None]
    return dict(audio=audio, audio_mask=audio_mask, text=text, text_mask=text_mask)


@pytest.mark.parametrize("modality", MODALITIES)
def test_logits_shape_and_every_parameter_gets_a_gradient(modality):
    model = tiny_model(modality)
    batch = batch_with_lengths([30, 17, 9], [12, 5, 8])
    logits = model(**batch)
    assert logits.shape == (3, 7)
    logits.logsumexp(-1).sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing}"


# The text and linear models neither pool over time nor attend: one case each, not six copies of it.
POOLING_CASES = [(modality, merge_how, attn_mask) for modality in MODALITIES for merge_how in MERGES
                 for attn_mask in (True, False)
                 if modality not in ("text", "linear") or (merge_how, attn_mask) == ("average", True)]  # fmt: skip


@pytest.mark.parametrize("modality, merge_how, attn_mask", POOLING_CASES)
def test_padded_frames_and_tokens_never_change_the_output(modality, merge_how, attn_mask):
    model = tiny_model(modality, merge_how=merge_how, attn_mask=attn_mask).eval()
    batch = batch_with_lengths([30, 17, 9], [12, 5, 8])
    reference = model(**batch)

    noisy = {k: v.clone() for k, v in batch.items()}
    g = torch.Generator().manual_seed(1)
    for name in ("audio", "text"):
        pad = ~noisy[f"{name}_mask"]
        noisy[name][pad] = 1e3 * torch.randn(int(pad.sum()), noisy[name].shape[-1], generator=g)
    assert not torch.equal(noisy["audio"], batch["audio"]) and not torch.equal(noisy["text"], batch["text"])
    torch.testing.assert_close(model(**noisy), reference, rtol=0, atol=1e-5)


# Largest logit difference from float32 allowed under autocast: bf16 keeps 8 significant bits
# (relative error 2^-8), fp16 11 (2^-11); seen on these tiny models (seed 0): 0.032 and 0.0036.
MIXED_PRECISION = {torch.bfloat16: 0.05, torch.float16: 0.01}


@pytest.mark.parametrize("dtype", MIXED_PRECISION)
@pytest.mark.parametrize("modality", MODALITIES)
def test_under_mixed_precision_padding_still_never_matters(modality, dtype):
    """--amp runs the models under CUDA's autocast; CPU's autocast takes the same code through
    the same reduced-precision arithmetic, so the masks are checked here, on machines without a GPU."""
    model = tiny_model(modality).eval()
    batch = batch_with_lengths([30, 17, 9], [12, 5, 8])
    noisy = {k: v.clone() for k, v in batch.items()}
    for name in ("audio", "text"):
        pad = ~noisy[f"{name}_mask"]
        noisy[name][pad] = 1e3 * torch.randn(int(pad.sum()), noisy[name].shape[-1], generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=dtype):
        reduced, reduced_noisy = model(**batch), model(**noisy)
    assert reduced.dtype == dtype
    torch.testing.assert_close(reduced_noisy, reduced, rtol=0, atol=1e-5)
    torch.testing.assert_close(reduced.float(), model(**batch), rtol=0, atol=MIXED_PRECISION[dtype])


@pytest.mark.parametrize("modality", [m for m in MODALITIES if m != "text"])
def test_batched_equals_one_clip_at_a_time(modality):
    model = tiny_model(modality).eval()
    audio_lengths, text_lengths = [30, 17, 9], [12, 5, 8]
    batch = batch_with_lengths(audio_lengths, text_lengths)
    batched = model(**batch)
    for i, (t, l) in enumerate(zip(audio_lengths, text_lengths)):
        single = model(
            audio=batch["audio"][i : i + 1, :t],
            audio_mask=batch["audio_mask"][i : i + 1, :t],
            text=batch["text"][i : i + 1, :l],
            text_mask=batch["text_mask"][i : i + 1, :l],
        )
        torch.testing.assert_close(single[0], batched[i], rtol=1e-4, atol=1e-5)


def test_merge_last_takes_the_last_real_step_and_average_ignores_padding():
    x = torch.arange(2 * 4 * 1, dtype=torch.float32).view(2, 4, 1)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    assert merge_over_time(x, mask, "last").flatten().tolist() == [2.0, 4.0]
    assert merge_over_time(x, mask, "average").flatten().tolist() == [1.0, 4.0]
    stats = merge_over_time(x, mask, "stats")  # (B, 2): mean, then standard deviation of real steps
    torch.testing.assert_close(stats, torch.tensor([[1.0, (2 / 3) ** 0.5], [4.0, 0.0]]), atol=1e-3, rtol=0)


def test_bad_options_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="merge_how"):
        tiny_model("cross", merge_how="max")
    with pytest.raises(ValueError, match="model = 'video': must be one of audio, text, cross"):
        tiny_model("video")
    with pytest.raises(ValueError, match="divisible"):
        tiny_model("cross", d_model=30, num_heads=4)


@pytest.mark.parametrize("attn_mask", [True, False])
def test_with_the_causal_mask_no_frame_sees_a_later_one(attn_mask):
    model = tiny_model("audio", attn_mask=attn_mask, layers=2).eval()
    batch = batch_with_lengths([12], [1])
    later_changed = batch["audio"].clone()
    later_changed[0, 8:] += 5.0
    with torch.no_grad():
        before = model.encoder(batch["audio"], batch["audio_mask"])  # (1, 12, F)
        after = model.encoder(later_changed, batch["audio_mask"])
    # A masked key weighs exactly 0: the earlier frames' outputs are the same numbers, not close ones.
    assert torch.equal(before[0, :8], after[0, :8]) == attn_mask
    assert not torch.equal(before[0, 8:], after[0, 8:])


def test_causal_mask_follows_mult_for_rectangular_pairs_per_clip():
    # Clip 0: 3 real queries over 7 real keys; clip 1: 2 over 3 (padded to 3 x 7).
    queries = torch.tensor([[True, True, True], [True, True, False]])
    keys = torch.tensor([[True] * 7, [True] * 3 + [False] * 4])
    allowed = causal_mask(queries, keys, 3, 7, torch.device("cpu"))
    # MulT: query i sees keys j <= i + |M - N| (M - N = 4, then 1).
    assert allowed[0].int().tolist() == [[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1]]
    assert allowed[1, :2, :3].int().tolist() == [[1, 1, 0], [1, 1, 1]]
    square = causal_mask(None, None, 4, 4, torch.device("cpu"))[0]
    assert torch.equal(square, torch.ones(4, 4, dtype=torch.bool).tril())  # self-attention stays causal


def test_with_default_flags_the_text_stream_hears_the_end_of_the_clip():
    model = tiny_model("cross").eval()  # attn_mask on, as by default
    assert model.streams.text_with_audio.causal
    batch = batch_with_lengths([200, 150], [15, 9])
    changed = {k: v.clone() for k, v in batch.items()}
    changed["audio"][0, 190:200] += 5.0  # the last real frames of clip 0
    changed["audio"][1, 140:150] += 5.0

    streams = {}
    for name, inputs in (("before", batch), ("after", changed)):
        hooked = []
        handle = model.streams.text_with_audio.register_forward_hook(lambda m, i, out: hooked.append(out))
        with torch.inference_mode():
            logits = model(**inputs)
        handle.remove()
        streams[name] = (hooked[0], logits)
    (text_before, logits_before), (text_after, logits_after) = streams["before"], streams["after"]
    for clip, real_steps in ((0, 13), (1, 7)):  # tokens after the kernel-3 convolution
        assert not torch.allclose(text_before[clip, :real_steps], text_after[clip, :real_steps])
        assert not torch.allclose(logits_before[clip], logits_after[clip])


@pytest.mark.parametrize("modality", ["cross", "early", "late", "tfn", "lmf"])
def test_a_text_without_a_real_step_is_refused_by_the_models_that_fuse(modality):
    model = tiny_model(modality).eval()
    batch = batch_with_lengths([30, 17], [12, 2])  # [CLS] [SEP]: nothing left after the convolution
    with pytest.raises(ValueError, match="at least 3 tokens"):
        model(**batch)


@pytest.mark.parametrize("modality", MODALITIES)
def test_a_few_steps_on_tiny_data_lower_the_loss(modality):
    torch.manual_seed(0)
    model = tiny_model(modality, attn_dropout=0.0, embed_dropout=0.0, res_dropout=0.0, relu_dropout=0.0)
    batch = batch_with_lengths([30, 17, 9, 25, 12, 20], [12, 5, 8, 10, 6, 9])
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(**batch), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("utterance_stats", [False, True])
@pytest.mark.parametrize("modality", ["cross", "early", "late", "tfn", "lmf"])
def test_modality_dropout_acts_in_training_only_and_drops_one_stream_per_clip(modality, utterance_stats):
    torch.manual_seed(0)
    batch = batch_with_lengths([30, 17, 9, 25] * 8, [12, 5, 8, 10] * 8)
    quiet = dict(attn_dropout=0.0, embed_dropout=0.0, res_dropout=0.0, relu_dropout=0.0, out_dropout=0.0,
                 utterance_stats=utterance_stats)  # fmt: skip
    model = tiny_model(modality, modality_dropout=0.999, **quiet)
    plain = tiny_model(modality, **quiet)
    plain.load_state_dict(model.state_dict())
    model.eval(), plain.eval()
    with torch.no_grad():
        assert torch.equal(model(**batch), plain(**batch))  # evaluation never drops
        model.train()
        dropped = model(**batch)
        # Zero input projects to a zero stream (standardised by mean 0, std 1; convolutions without bias).
        no_audio = plain(**{**batch, "audio": torch.zeros_like(batch["audio"])})
        no_text = plain(**{**batch, "text": torch.zeros_like(batch["text"])})
    lost_audio = torch.isclose(dropped, no_audio, atol=1e-5).all(-1)
    lost_text = torch.isclose(dropped, no_text, atol=1e-5).all(-1)
    assert (lost_audio ^ lost_text).all() and lost_audio.any() and lost_text.any()


def test_modality_dropout_is_refused_where_there_is_nothing_to_drop():
    with pytest.raises(ValueError, match="modality_dropout = 0.3: applies to the models that fuse"):
        tiny_model("audio", modality_dropout=0.3)


@pytest.mark.parametrize("modality", ["cross", "early", "late", "tfn", "lmf", "text"])
def test_a_text_of_one_ngram_vector_feeds_every_model_that_reads_text(modality):
    dims = Dims(audio=F_MFCC, text=E_TEXT, classes=7, text_vector=True)
    model = build_model(ModelConfig(modality=modality, d_model=20, layers=1, num_heads=4), dims).eval()
    batch = batch_with_lengths([30, 17], [1, 1])
    logits = model(**batch)
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    longer = batch_with_lengths([30, 17], [1, 1], seed=1)  # other audio, other vector
    assert not torch.allclose(model(**{**batch, "text": longer["text"]}), logits)


def test_the_audio_model_takes_a_width_its_heads_do_not_divide():
    model = build_model(ModelConfig(modality="audio", layers=1, num_heads=5), Dims(audio=46, text=0, classes=7)).eval()
    audio = torch.randn(2, 30, 46)
    mask = torch.arange(30)[None] < torch.tensor([30, 12])[:, None]
    logits = model(audio, mask)
    padded_differently = model(audio * mask[..., None], mask)  # what the padding holds never matters
    assert logits.shape == (2, 7) and torch.allclose(logits, padded_differently, atol=1e-6)


@pytest.mark.parametrize("modality", ["cross", "early", "late", "tfn", "lmf"])
def test_a_wide_path_adds_the_linear_baselines_logits_and_learns_with_the_rest(modality):
    torch.manual_seed(0)
    model = tiny_model(modality, wide=True).eval()
    batch = batch_with_lengths([30, 17, 9], [12, 5, 8])
    linear = build_model(ModelConfig(modality="linear"), DIMS).eval()
    linear.wide.load_state_dict(model.wide.state_dict())
    deep_only = model.fuse(*model.streams(**batch))
    torch.testing.assert_close(model(**batch), deep_only + linear(**batch))
    model.train()
    model(**batch).logsumexp(-1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with pytest.raises(ValueError, match="wide = True: applies to the models that fuse"):
        tiny_model("audio", wide=True)


@pytest.mark.parametrize("modality", ["cross", "early", "late", "tfn", "lmf"])
def test_utterance_stats_hand_the_head_the_input_frames_mean_and_std_and_padding_never_matters(modality):
    torch.manual_seed(0)
    model = tiny_model(modality, utterance_stats=True).eval()
    batch = batch_with_lengths([30, 17, 9], [12, 5, 8])
    model.audio_norm.set(torch.randn(F_MFCC), torch.rand(F_MFCC) + 0.5)
    audio_stream, _ = model.streams(**batch)
    frames = model.audio_norm(batch["audio"])
    real = frames[1, :17]  # the second clip's 17 real frames
    assert audio_stream.shape == (3, model.streams.text_width + 2 * F_MFCC)
    torch.testing.assert_close(audio_stream[1, -2 * F_MFCC :], torch.cat([real.mean(0), real.std(0, unbiased=False)]),
                               rtol=1e-4, atol=1e-3)  # fmt: skip
    padded = {**batch, "audio": batch["audio"] + 1e3 * ~batch["audio_mask"][..., None]}
    torch.testing.assert_close(model(**padded), model(**batch), rtol=0, atol=1e-5)
    model.train()
    model(**batch).logsumexp(-1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with pytest.raises(ValueError, match="utterance_stats = True: applies to the models that fuse"):
        tiny_model("audio", utterance_stats=True)


def test_sinusoidal_positions_count_real_steps_from_one_and_zero_the_padding():
    mask = torch.tensor([[True, True, True, False]])
    emb = sinusoidal_positions(mask, 6)  # (1, 4, 6): 3 sines, 3 cosines
    freqs = 10000.0 ** -(np.arange(3) / 2)  # half = 3: exponents 0, 1/2, 1
    for step, position in enumerate((1, 2, 3)):
        expected = np.concatenate([np.sin(position * freqs), np.cos(position * freqs)])
        np.testing.assert_allclose(emb[0, step].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(emb[0, 3], torch.zeros(6))
    assert sinusoidal_positions(mask, 7).shape == (1, 4, 7) and torch.equal(sinusoidal_positions(mask, 7)[0, :3, 6], torch.zeros(3))


def test_a_block_whose_sublayers_give_nothing_passes_its_input_through():
    """Both sublayers are residual: x + attention(...), then + feed-forward(...)."""
    block = TransformerBlock(8, 2, attn_dropout=0.0, relu_dropout=0.0, res_dropout=0.0).eval()
    with torch.no_grad():
        block.attn.to_out.weight.zero_(), block.attn.to_out.bias.zero_()
        block.ff[-1].weight.zero_(), block.ff[-1].bias.zero_()
    x = torch.randn(2, 5, 8)
    mask = torch.ones(2, 5, dtype=torch.bool)
    assert torch.equal(block(x, attention_bias(mask, mask, causal=False)), x)


def test_late_fusion_mixes_the_log_probabilities_of_its_two_heads_by_learned_weights():
    model = tiny_model("late").eval()
    a, t = torch.randn(3, model.streams.audio_width), torch.randn(3, model.streams.text_width)
    with torch.no_grad():
        model.mix.copy_(torch.tensor([1.0, -1.0]))
        w = model.mix.softmax(-1)
        expected = w[0] * model.audio_head(a).log_softmax(-1) + w[1] * model.text_head(t).log_softmax(-1)
        torch.testing.assert_close(model.fuse(a, t), expected)
        assert not torch.allclose(model.fuse(a, t), model.fuse(t, a))  # each head reads its own stream
        assert (model.fuse(a, t).exp().sum(-1) <= 1 + 1e-6).all()  # a mix of log-probabilities, not logits
