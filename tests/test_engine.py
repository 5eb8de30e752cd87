"""The one training engine on a tiny real model: chunked batches give the same step, the best epoch
is chosen by the named metric and restored, the epoch log is written, bad settings are refused."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from audiotext.training.engine import Engine, EngineSettings


def data(n=40, seed=0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long()
    return [{"x": x[i : i + 8], "labels": y[i : i + 8]} for i in range(0, n, 8)]


def loss(model, batch):
    return F.cross_entropy(model(batch["x"]), batch["labels"])


def fit(settings: EngineSettings, **kwargs):
    engine = Engine(settings)
    model = nn.Linear(6, 2)
    result = engine.fit(model, torch.optim.SGD(model.parameters(), lr=0.1), data(), loss, **kwargs)
    return model, result


def test_a_batch_in_chunks_takes_the_same_step_as_whole():
    whole, _ = fit(EngineSettings(name="t", epochs=2, seed=0, progress=False))
    chunked, _ = fit(EngineSettings(name="t", epochs=2, seed=0, batch_chunk=3, progress=False))
    for a, b in zip(whole.parameters(), chunked.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


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
        on_epoch=lambda epoch, row: weights.update({epoch: model.weight.detach().clone()}),
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
                        on_epoch=lambda epoch, row: rates.append(row["lr"]))  # fmt: skip
    assert result.rows[-1]["train_loss"] < result.rows[0]["train_loss"]
    assert rates == sorted(rates, reverse=True) and rates[-1] == pytest.approx(0.0)


@pytest.mark.parametrize(
    "bad, message",
    [(dict(epochs=0), "epochs"), (dict(schedule="cosine"), "schedule"), (dict(best_by="accuracy"), "best_by"),
     (dict(warmup_percent=1.5), "warmup_percent"), (dict(batch_chunk=0), "batch_chunk"),
     (dict(stop_after=-1), "stop_after")],  # fmt: skip
)
def test_bad_settings_are_refused_with_the_setting_named(bad, message):
    with pytest.raises(ValueError, match=message):
        EngineSettings(**{**dict(name="t", epochs=1, seed=0), **bad})


def test_training_stops_early_when_the_named_metric_no_longer_improves(tmp_path):
    dev = iter([{"loss": 0.9}, {"loss": 0.6}, {"loss": 0.7}, {"loss": 0.65}, {"loss": 0.5}, {"loss": 0.4}])
    _, result = fit(EngineSettings(name="t", epochs=6, seed=0, stop_after=2, progress=False),
                    evaluate=lambda m: next(dev), epoch_log=tmp_path / "epochs.csv")  # fmt: skip
    assert [row["epoch"] for row in result.rows] == [1, 2, 3, 4] and result.best["epoch"] == 2
    assert len(pd.read_csv(tmp_path / "epochs.csv")) == 4
