"""Failed trainings become TrainingFailed events and the search goes on (real Keras, small data)."""

from __future__ import annotations

from pathlib import Path

import pytest

import nas.training.fit
from nas.drivers.config import load
from nas.drivers.runner import run_search
from nas.ledger.events import ArchitectureProposed, TrainingFailed
from nas.ledger.memory import MemoryEventLog, MemoryStore
from nas.ledger.state import OOM_CAP_FACTOR, fold, parse_architecture

ROOT = Path(__file__).parents[2]
SMALL = [
    "data.dataset=digits",
    "train.epochs=1",
    "train.min_steps=0",
    "search.initial_width=8",
    "search.strategy=random",
]


def failures(log: MemoryEventLog) -> list[TrainingFailed]:
    return [e for e in log.read() if isinstance(e, TrainingFailed)]


@pytest.mark.slow
def test_nan_loss_and_timeout_are_recorded_and_the_search_ends() -> None:
    store = MemoryStore()
    nan = store.log("nan")
    state = run_search(
        store, "nan", load(ROOT / "params.yaml", [*SMALL, "search.max_models=2", "train.learning_rate=1e12"])
    )
    assert [f.reason for f in failures(nan)] == ["nan_loss", "nan_loss"]
    assert state.finished and state.count("failed") == 2 and state.best is None
    slow = store.log("slow")
    timed = [*SMALL, "search.max_models=1", "train.epochs=4", "train.timeout_s=1e-6"]
    run_search(store, "slow", load(ROOT / "params.yaml", timed))
    (failure,) = failures(slow)
    assert failure.reason == "timeout" and "train.timeout_s" in failure.error
    assert failure.error.endswith("(stopped in epoch 1 of 4)")  # within the first epoch, not after the training


@pytest.mark.slow
def test_out_of_memory_lowers_the_size_cap_and_other_errors_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorflow as tf

    real_fit = nas.training.fit.fit
    limit = 3_500  # pretend the device holds models up to this size

    def fit_on_a_small_device(arch, *args, **kwargs):
        if arch.param_count > limit:
            raise tf.errors.ResourceExhaustedError(None, None, f"OOM when allocating tensor for {arch.param_count}")
        if arch.n_layers > 24:
            raise RuntimeError("boom: an unexpected bug")
        return real_fit(arch, *args, **kwargs)

    monkeypatch.setattr(nas.training.fit, "fit", fit_on_a_small_device)
    store = MemoryStore()
    log = store.log("oom")
    state = run_search(
        store, "oom", load(ROOT / "params.yaml", [*SMALL, "search.max_models=8", "search.max_params=200000"])
    )
    events = log.read()
    ooms = [f for f in failures(log) if f.reason == "out_of_memory"]
    assert ooms, "the test should provoke at least one out-of-memory failure"
    assert state.count("trained") >= 1 and state.finished
    smallest = min(f.param_count for f in ooms)
    assert state.max_params == int(smallest * OOM_CAP_FACTOR)
    # every proposal made after an out-of-memory failure was known respects the lowered cap
    for e in events:
        if isinstance(e, ArchitectureProposed):
            before = fold([x for x in events if x.seq < e.seq])
            known = len(before.models) - before.config["search"]["trainers"]
            cap = before.size_cap(known)
            assert parse_architecture(e.architecture).param_count <= cap
    errors = [f for f in failures(log) if f.reason == "error"]
    assert errors, "the test should provoke at least one other error (a model of more than 24 layers)"
    assert all("RuntimeError: boom" in f.error for f in errors)
