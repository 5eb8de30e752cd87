"""Model shapes, gradient flow, and the property the reference lacked: padding never matters."""

import pytest
import torch

from audiotext.config import ModelConfig
from audiotext.models.classifiers import build_model, merge_over_time

F_MFCC, E_TEXT = 40, 32


def tiny_config(modality: str, **overrides) -> ModelConfig:
    base = dict(
        modality=modality, n_classes=7, audio_dim=F_MFCC, text_dim=E_TEXT, d_model=20, layers=2, num_heads=4,
    )
    return ModelConfig(**{**base, **overrides})


def batch_with_lengths(audio_lengths, text_lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, t, l = len(audio_lengths), max(audio_lengths), max(text_lengths)
    audio_mask = torch.arange(t)[None] < torch.tensor(audio_lengths)[:, None]
    text_mask = torch.arange(l)[None] < torch.tensor(text_lengths)[:, None]
    audio = torch.randn(b, t, F_MFCC, generator=g) * audio_mask[..., None]
    text = torch.randn(b, l, E_TEXT, generator=g) * text_mask[..., None]
    return dict(audio=audio, audio_mask=audio_mask, text=text, text_mask=text_mask)


@pytest.mark.parametrize("modality", ["audio", "text", "cross"])
def test_logits_shape_and_every_parameter_gets_a_gradient(modality):
    model = build_model(tiny_config(modality))
    batch = batch_with_lengths([30, 17, 9], [12, 5, 8])
    logits = model(**batch)
    assert logits.shape == (3, 7)
    logits.logsumexp(-1).sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("modality", ["audio", "text", "cross"])
@pytest.mark.parametrize("merge_how", ["average", "last"])
@pytest.mark.parametrize("attn_mask", [True, False])
def test_padded_frames_and_tokens_never_change_the_output(modality, merge_how, attn_mask):
    model = build_model(tiny_config(modality, merge_how=merge_how, attn_mask=attn_mask)).eval()
    batch = batch_with_lengths([30, 17, 9], [12, 5, 8])
    reference = model(**batch)

    noisy = {k: v.clone() for k, v in batch.items()}
    g = torch.Generator().manual_seed(1)
    for name in ("audio", "text"):
        pad = ~noisy[f"{name}_mask"]
        noisy[name][pad] = 1e3 * torch.randn(int(pad.sum()), noisy[name].shape[-1], generator=g)
    assert not torch.equal(noisy["audio"], batch["audio"]) and not torch.equal(noisy["text"], batch["text"])
    torch.testing.assert_close(model(**noisy), reference, rtol=0, atol=1e-5)


@pytest.mark.parametrize("modality", ["audio", "cross"])
def test_batched_equals_one_clip_at_a_time(modality):
    model = build_model(tiny_config(modality)).eval()
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


def test_bad_options_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="merge_how"):
        build_model(tiny_config("cross", merge_how="max"))
    with pytest.raises(ValueError, match="modality"):
        build_model(tiny_config("video"))
    with pytest.raises(ValueError, match="divisible"):
        build_model(tiny_config("cross", d_model=30, num_heads=4))
