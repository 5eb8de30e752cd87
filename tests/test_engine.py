"""The one training engine on a tiny real model: chunked batches give the same step, the best epoch
is chosen by the named metric and restored, the epoch log is written, bad settings are refused, and
a fit broken at any step (or by Ctrl-C) resumes to exactly what it would have reached unbroken."""

from __future__ import annotations

import os
import signal

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from audiotext.data.dataset import EncodedSplit
from audiotext.data.loading import batch_order, make_loader
from audiotext.errors import TrainingInterrupted
from audiotext.features.cache import PackedSequences
from audiotext.training.engine import Engine, EngineSettings
from audiotext.training.state import load_state, save_state


def data(n=40, seed=0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long()
    return [{"x": x[i : i + 8], "labels": y[i : i + 8]} for i in range(0, n, 8)]


def loss(model, batch):
    return F.cross_entropy(model(batch["x"]), batch["labels"])


def fit(settings: EngineSettings, loss=loss, **kwargs):
    engine = Engine(settings)
    model = nn.Linear(6, 2)
    result = engine.fit(model, torch.optim.SGD(model.parameters(), lr=0.1), data(), loss, **kwargs)
    return model, result


CLASS_WEIGHTS = torch.tensor([1.0, 5.0])


def weighted_loss(model, batch):
    return F.cross_entropy(model(batch["x"]), batch["labels"], weight=CLASS_WEIGHTS)


@pytest.mark.parametrize("weighted", [False, True], ids=["mean", "class-weighted"])
def test_a_batch_in_chunks_takes_the_same_step_as_whole(weighted):
    # A class-weighted mean divides by the batch's total weight, not its rows: chunks must too.
    objective = dict(loss=weighted_loss, row_weights=lambda batch: CLASS_WEIGHTS[batch["labels"]]) if weighted else {}
    whole, _ = fit(EngineSettings(name="t", epochs=2, seed=0, progress=False), **objective)
    chunked, _ = fit(EngineSettings(name="t", epochs=2, seed=0, batch_chunk=3, progress=False), **objective)
    for a, b in zip(whole.parameters(), chunked.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_batch_whose_rows_weigh_nothing_takes_no_step_and_counts_in_no_loss():
    # A masked-LM batch in which no token was picked: its loss is 0/0 (it was a ZeroDivisionError).
    settings = EngineSettings(name="t", epochs=2, seed=0, warmup_percent=0.0, progress=False)
    weighs_nothing = data()[2]["x"]
    skipped, result = fit(settings, row_weights=lambda batch: torch.full((8,), float(not torch.equal(batch["x"], weighs_nothing))))
    engine, without = Engine(settings), nn.Linear(6, 2)
    expected = engine.fit(without, torch.optim.SGD(without.parameters(), lr=0.1), data()[:2] + data()[3:], loss)
    assert torch.equal(skipped.weight, without.weight)
    assert [row["train_loss"] for row in result.rows] == [row["train_loss"] for row in expected.rows]
    with pytest.raises(ValueError, match="no batch of epoch 1 had anything to train on"):
        fit(settings, row_weights=lambda batch: torch.zeros(len(batch["labels"])))


@pytest.mark.parametrize("best_by, best_epoch", [("loss", 2), ("macro_f1", 3)])
def test_the_best_epoch_by_the_named_metric_is_kept_and_restored(tmp_path, best_by, best_epoch):
    dev = iter([{"loss": 0.9, "macro_f1": 0.2}, {"loss": 0.5, "macro_f1": 0.3}, {"loss": 0.7, "macro_f1": 0.6},
                {"loss": 0.8, "macro_f1": 0.6}])  # fmt: skip
    weights, saved = {}, []
    engine = Engine(EngineSettings(name="t", epochs=4, seed=0, best_by=best_by, progress=False))
    model = nn.Linear(6, 2)
    result = engine.fit(
        model, torch.optim.SGD(model.parameters(), lr=0.1), data(), loss,
        evaluate=lambda m: next(dev),
        on_best=lambda m: saved.append(len(weights) + 1),
        on_epoch=lambda rows: weights.update({len(rows): model.weight.detach().clone()}),
        epoch_log=tmp_path / "epochs.csv",
        restore_best=True,
    )  # fmt: skip
    assert result.best["epoch"] == best_epoch and saved[-1] == best_epoch
    assert torch.equal(model.weight, weights[best_epoch]) and not torch.equal(model.weight, weights[4])
    log = pd.read_csv(tmp_path / "epochs.csv")
    assert list(log["epoch"]) == [1, 2, 3, 4] and list(log["dev_loss"]) == [0.9, 0.5, 0.7, 0.8]
    assert {"train_loss", "lr", "seconds", "dev_macro_f1"} <= set(log.columns)


def test_training_lowers_the_loss_and_warm_up_then_decay_shape_the_rate():
    rates = []
    engine = Engine(EngineSettings(name="t", epochs=5, seed=0, schedule="linear", warmup_percent=0.2, progress=False))
    model = nn.Linear(6, 2)
    result = engine.fit(model, torch.optim.SGD(model.parameters(), lr=0.1), data(), loss,
                        on_epoch=lambda rows: rates.append(rows[-1]["lr"]))  # fmt: skip
    assert result.rows[-1]["train_loss"] < result.rows[0]["train_loss"]
    assert rates == sorted(rates, reverse=True) and rates[-1] == pytest.approx(0.0)


@pytest.mark.parametrize(
    "bad, message",
    [(dict(epochs=0), "epochs"), (dict(schedule="cosine"), "schedule"), (dict(best_by="accuracy"), "best_by"),
     (dict(warmup_percent=1.5), "warmup_percent"), (dict(batch_chunk=0), "batch_chunk"),
     (dict(stop_after=-1), "stop_after"), (dict(ema=1.0), "ema")],  # fmt: skip
)
def test_bad_settings_are_refused_with_the_setting_named(bad, message):
    with pytest.raises(ValueError, match=message):
        EngineSettings(**{**dict(name="t", epochs=1, seed=0), **bad})


def test_dev_sees_the_moving_average_of_the_weights_and_training_goes_on_from_the_trained_ones():
    def run(ema: float):
        engine = Engine(EngineSettings(name="t", epochs=3, seed=0, ema=ema, progress=False))
        model = nn.Linear(6, 2)
        starts, evaluated = [], []  # the weights each step starts from; those dev sees after each epoch

        def recording_loss(m, batch):
            starts.append(m.weight.detach().clone())
            return loss(m, batch)

        engine.fit(model, torch.optim.SGD(model.parameters(), lr=0.1), data(), recording_loss,
                   evaluate=lambda m: evaluated.append(m.weight.detach().clone()) or {"loss": 0.0})  # fmt: skip
        return model.weight.detach(), starts, evaluated

    trained, starts, _ = run(0.0)
    kept, starts_with_average, evaluated = run(0.9)
    assert len(starts) == 15 and all(torch.equal(a, b) for a, b in zip(starts, starts_with_average))
    average, expected = starts[0], []
    for step, weights in enumerate(starts[1:] + [trained], 1):
        average = average + (1 - 0.9) * (weights - average)
        if step % 5 == 0:  # 5 batches an epoch
            expected.append(average)
    assert len(evaluated) == 3
    for seen, mean in zip(evaluated, expected):
        torch.testing.assert_close(seen, mean)
    torch.testing.assert_close(kept, expected[-1])  # the fit keeps the average
    assert not torch.allclose(kept, trained, atol=1e-3)


def test_training_stops_early_when_the_named_metric_no_longer_improves(tmp_path):
    dev = iter([{"loss": 0.9}, {"loss": 0.6}, {"loss": 0.7}, {"loss": 0.65}, {"loss": 0.5}, {"loss": 0.4}])
    _, result = fit(EngineSettings(name="t", epochs=6, seed=0, stop_after=2, progress=False),
                    evaluate=lambda m: next(dev), epoch_log=tmp_path / "epochs.csv")  # fmt: skip
    assert [row["epoch"] for row in result.rows] == [1, 2, 3, 4] and result.best["epoch"] == 2
    assert len(pd.read_csv(tmp_path / "epochs.csv")) == 4


class Broken(Exception):
    """Stands for a kill: the fit ends in the middle of a step, nothing after it runs."""


def resumable_fit(checkpoint, settings: EngineSettings, break_at: int | None = None, on_step=None, buckets=False,
                  data_seed=5):  # fmt: skip
    """A fit with everything a resume must restore: dropout (global generator), Adam's moments, the
    plateau schedule's warm-up and its dev-loss history, a shuffled loader (`buckets`: batches of
    similar length, whose loader draws its seeds from the global generator), the best epoch so far."""
    engine = Engine(settings)
    model = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.3), nn.ReLU(), nn.Linear(16, 2))
    x, y = torch.randn(48, 6, generator=torch.Generator().manual_seed(data_seed)), torch.arange(48) % 2
    data = EncodedSplit(y, PackedSequences.from_arrays([row[None] for row in x]), None, np.zeros(48, dtype=int))
    loader = make_loader(data, 8, shuffle=True, seed=1, length_buckets=buckets)
    loader.collate_fn = lambda items: {"x": torch.cat([i[0] for i in items]), "labels": torch.stack([i[2] for i in items])}
    steps = []

    def step_loss(m, batch):
        steps.append(1)
        if on_step is not None:
            on_step(len(steps))
        if break_at is not None and len(steps) == break_at:
            raise Broken
        return loss(m, batch)

    def dev_loss(m):
        m.eval()
        with torch.no_grad():
            value = loss(m, {"x": x, "labels": y}).item()
        return {"loss": value + 0.01 * torch.rand(()).item()}  # reads the global generator too

    result = engine.fit(model, torch.optim.Adam(model.parameters(), lr=0.01), loader, step_loss, evaluate=dev_loss,
                        restore_best=True, checkpoint=checkpoint, data_order=batch_order(loader),
                        data_digest=data.fingerprint())  # fmt: skip
    return model, result


SETTINGS = EngineSettings(name="t", epochs=4, seed=3, warmup_percent=0.3, patience=1, checkpoint_steps=2, progress=False)


@pytest.mark.parametrize("buckets", [False, True])
@pytest.mark.parametrize("break_at", [3, 6, 7, 9, 13, 24])  # mid-epoch, an epoch's first step, after an epoch's end, the last
@pytest.mark.parametrize("ema", [0.0, 0.8])
def test_a_fit_broken_at_any_step_resumes_to_the_same_weights_and_figures(tmp_path, break_at, buckets, ema):
    settings = EngineSettings(**{**SETTINGS.__dict__, "ema": ema})
    uninterrupted, expected = resumable_fit(None, settings, buckets=buckets)
    checkpoint = tmp_path / "resume.safetensors"
    with pytest.raises(Broken):
        resumable_fit(checkpoint, settings, break_at=break_at, buckets=buckets)
    assert checkpoint.is_file()
    resumed, result = resumable_fit(checkpoint, settings, buckets=buckets)
    for a, b in zip(uninterrupted.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    strip = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # noqa: E731
    assert strip(result.rows) == strip(expected.rows) and result.best == expected.best


def test_a_resume_saves_the_best_epochs_weights_again_over_those_a_kill_left_of_a_later_epoch(tmp_path):
    # Killed after on_best saved epoch 3 but before epoch 3's state was saved, and resumed where epoch
    # 3 trains otherwise (another number of processes or device) and is no better than epoch 2.
    checkpoint, saved, weights = tmp_path / "resume.safetensors", {}, {}

    def run(dev_losses, killed_in_epoch=None):
        dev = iter(dev_losses)
        engine, model = Engine(EngineSettings(name="t", epochs=3, seed=0, progress=False)), nn.Linear(6, 2)

        def on_best(m):
            saved["weights"] = m.weight.detach().clone()
            if len(weights) + 1 == killed_in_epoch:
                raise Broken

        engine.fit(model, torch.optim.SGD(model.parameters(), lr=0.1), data(), loss, evaluate=lambda m: {"loss": next(dev)},
                   on_best=on_best, on_epoch=lambda rows: weights.update({len(rows): model.weight.detach().clone()}),
                   restore_best=True, checkpoint=checkpoint)  # fmt: skip
        return model

    with pytest.raises(Broken):
        run([0.9, 0.5, 0.4], killed_in_epoch=3)
    model = run([0.6])
    assert torch.equal(saved["weights"], weights[2]) and torch.equal(model.weight, weights[2])


def test_a_resume_refuses_a_state_from_other_settings_or_data(tmp_path):
    checkpoint = tmp_path / "resume.safetensors"
    with pytest.raises(Broken):
        resumable_fit(checkpoint, SETTINGS, break_at=5)
    with pytest.raises(ValueError, match=r"resume.safetensors: saved with other training settings \(seed differ\)"):
        resumable_fit(checkpoint, EngineSettings(**{**SETTINGS.__dict__, "seed": 4}))
    with pytest.raises(ValueError, match=r"resume.safetensors: saved on other training or dev data \(other clips, labels or"):
        resumable_fit(checkpoint, SETTINGS, data_seed=6)  # as many clips and batches, other features
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    with pytest.raises(ValueError, match="resume.safetensors: not a readable training state"):
        resumable_fit(checkpoint, SETTINGS)


def test_ctrl_c_saves_the_step_in_progress_and_resumes_from_it(tmp_path):
    _, expected = resumable_fit(None, SETTINGS)
    checkpoint = tmp_path / "resume.safetensors"
    press_ctrl_c = lambda step: step == 9 and os.kill(os.getpid(), signal.SIGINT)  # noqa: E731
    before = signal.getsignal(signal.SIGINT)  # ignored when the tests run in the background
    with pytest.raises(TrainingInterrupted, match=r"stopped at epoch 2, step 3 of 6; the training state is saved in"):
        resumable_fit(checkpoint, SETTINGS, on_step=press_ctrl_c)
    assert signal.getsignal(signal.SIGINT) is before  # handed back
    _, result = resumable_fit(checkpoint, SETTINGS)
    assert [row["train_loss"] for row in result.rows] == [row["train_loss"] for row in expected.rows]


def test_a_training_state_round_trips_nesting_and_tied_weights(tmp_path):
    embedding = torch.randn(5, 3)
    state = {
        "model": {"embeddings.weight": embedding, "decoder.weight": embedding, "first_row": embedding[0]},
        "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "groups": [{"lr": 0.1, "params": [0, 1]}]},
        "rng": (np.arange(4, dtype=np.uint32), 7), "best": {},
    }  # fmt: skip
    save_state(tmp_path / "state.safetensors", state)
    loaded = load_state(tmp_path / "state.safetensors")
    model = loaded["model"]
    # Tied weights (the same tensor twice) come back as one tensor; another view of that memory as a copy.
    assert model["embeddings.weight"] is model["decoder.weight"] and torch.equal(model["decoder.weight"], embedding)
    assert torch.equal(model["first_row"], embedding[0])
    assert model["first_row"].untyped_storage().data_ptr() != model["embeddings.weight"].untyped_storage().data_ptr()
    assert loaded["optimizer"]["state"][0]["step"].item() == 3.0 and loaded["optimizer"]["groups"] == state["optimizer"]["groups"]
    assert isinstance(loaded["rng"], tuple) and np.array_equal(loaded["rng"][0], state["rng"][0]) and loaded["rng"][1] == 7
