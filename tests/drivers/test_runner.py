"""Real searches (Keras on small data): determinism, replay --verify, and resuming after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from nas.drivers.config import load
from nas.drivers.runner import run_search
from nas.ledger.events import ArchitectureProposed, SearchStarted, SurrogateRefitted, TrainingCompleted
from nas.ledger.memory import MemoryStore
from nas.ledger.replay import verify
from nas.tracking import open_store

ROOT = Path(__file__).parents[2]
SMALL = ["data.dataset=digits", "train.epochs=1", "train.min_steps=0", "search.initial_width=8", "search.max_models=4"]


def with_search(events: list, search: dict) -> list:
    """The log ``events`` as if its search had been started with these ``search`` settings."""
    started = events[0]
    return [replace(started, config={**started.config, "search": search}), *events[1:]]


def outcome(events) -> list[tuple[str, str, float]]:
    """(model, architecture id, validation accuracy) of every completed training, in order."""
    return [(e.model_id, e.architecture_id, e.val_accuracy) for e in events if isinstance(e, TrainingCompleted)]


@pytest.mark.slow
def test_same_params_and_seed_give_the_same_search_and_it_verifies() -> None:
    config = load(ROOT / "params.yaml", SMALL)
    stores = [MemoryStore(), MemoryStore()]
    for store in stores:
        run_search(store, "a", config)
    first, second = (store.log("a") for store in stores)
    assert outcome(first.read()) == outcome(second.read())
    assert len(outcome(first.read())) == 4
    assert verify(first.read()) is None
    # a proposal edited after the fact is a divergence, named by its seq
    events = first.read()
    i, bad = next((i, e) for i, e in enumerate(events) if isinstance(e, ArchitectureProposed) and e.morphisms)
    tampered = [*events[:i], replace(bad, morphisms=bad.morphisms[:-1]), *events[i + 1 :]]
    divergence = verify(tampered)
    assert divergence is not None and divergence.seq == bad.seq


@pytest.mark.slow
def test_a_search_logged_before_surrogate_targets_existed_still_verifies() -> None:
    """Logs from before ``search.surrogate_targets`` have no such key and were fitted on raw scores: replay
    must fit them so. A log made with raw scores verifies with the key removed, and not as a rank search."""
    store = MemoryStore()
    raw = [*SMALL, "search.max_models=6", "search.surrogate_targets=raw"]
    run_search(store, "old", load(ROOT / "params.yaml", raw))
    events = store.log("old").read()
    started = events[0]
    assert isinstance(started, SearchStarted)

    old = {k: v for k, v in started.config["search"].items() if k != "surrogate_targets"}
    assert verify(with_search(events, old)) is None
    divergence = verify(with_search(events, {**old, "surrogate_targets": "rank"}))
    # two scores normalise alike on either scale; the first refit on three is where the scales part
    refits = [e.seq for e in events if isinstance(e, SurrogateRefitted) and e.observations > 2]
    assert divergence is not None and divergence.seq == refits[0]


def test_a_search_logged_with_a_removed_setting_is_not_resumed_and_nothing_is_written() -> None:
    """train.augment (like train.lr_decay and train.weight_decay) was removed: a search that used it cannot go on
    as it began, so resuming it is one sentence naming the setting, its page and the version that still has it."""
    from nas.data import fingerprint
    from nas.drivers.runner import splits_for
    from nas.ledger.events import removed_in_use
    from nas.ledger.service import SearchService

    store = MemoryStore()
    config = load(ROOT / "params.yaml", SMALL)
    config["train"]["augment"] = "flip"  # as nas 0.2.0 logged it
    splits = splits_for(config)
    store.create("old")
    SearchService(store.log("old")).start("old", config, splits.input_shape, splits.num_classes, fingerprint(splits))
    before = store.log("old").last_seq()
    refused = r"search 'old' was started with train.augment='flip', a setting nas 0.3.0 removed \(it did not pay: "
    with pytest.raises(
        ValueError, match=refused + r"bench/results/flip-fashion_mnist-1200.md\); resume it with nas 0.2.0"
    ):
        run_search(store, "old", None)
    assert store.log("old").last_seq() == before
    config["train"]["augment"] = "none"  # what the code does now: nothing stands in the way
    assert removed_in_use(config) == [] and removed_in_use({"train": {"lr_decay": 0.5}}) == ["train.lr_decay=0.5"]


@pytest.mark.slow
def test_a_search_logged_with_removed_settings_verifies_or_says_why_not() -> None:
    """A log made with the removed settings at what the code now does (as nas 0.2.0 logged every search: parents 0,
    max_steps 0, acquisition ucb, continue_leader false, propose_ahead true, no learning_rates) verifies; one made
    with another value cannot be re-run here, and verify says so in one sentence instead of reporting a
    divergence."""
    store = MemoryStore()
    run_search(store, "old", load(ROOT / "params.yaml", SMALL))
    events = store.log("old").read()
    started = events[0]
    assert isinstance(started, SearchStarted)
    assert all(e.morphisms for e in events if isinstance(e, ArchitectureProposed) and e.parent_model_id)
    as_0_2 = {
        **started.config["search"],
        **{"parents": 0, "max_steps": 0, "acquisition": "ucb"},
        **{"continue_leader": False, "propose_ahead": True, "learning_rates": []},
    }
    assert verify(with_search(events, as_0_2)) is None
    for changed, shown in (
        ({"parents": 1}, "search.parents=1"),
        ({"continue_leader": True}, "search.continue_leader=True"),
        ({"propose_ahead": False}, "search.propose_ahead=False"),
        ({"learning_rates": [0.001, 0.002]}, r"search.learning_rates=\[0.001, 0.002\]"),
    ):
        with pytest.raises(ValueError, match=rf"search 'old' proposed with {shown}, a setting nas 0.3.0 removed"):
            verify(with_search(events, {**as_0_2, **changed}))


@pytest.mark.slow
def test_resume_after_sigkill_loses_and_repeats_nothing(tmp_path: Path, mlflow_uri: str) -> None:
    """Kill a search at random moments, resume each time; it ends as an uninterrupted one would."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri, "TF_CPP_MIN_LOG_LEVEL": "3"}
    sets = [f"--set={s}" for s in (*SMALL[:-1], "search.max_models=5", "search.strategy=random")]
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    nas = [sys.executable, "-m", "nas.cli"]
    sets.append("--local")  # the plain loop: the drill is about the log, not about Prefect

    subprocess.run([*nas, "search", "--name", "whole", *sets], env=env, cwd=tmp_path, check=True, capture_output=True)

    rng = np.random.default_rng(7)
    proc = subprocess.Popen(
        [*nas, "search", "--name", "killed", *sets],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kills = 0
    for _ in range(4):
        try:
            proc.wait(timeout=float(rng.uniform(6, 14)))
            break  # it finished before this kill
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        proc = subprocess.Popen(
            [*nas, "resume", "killed", "--local"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    assert proc.wait(timeout=300) == 0
    assert kills >= 1

    whole, killed = open_store().log("whole").read(), open_store().log("killed").read()
    assert outcome(killed) == outcome(whole)  # same models, same scores
    trained = [e.model_id for e in killed if isinstance(e, TrainingCompleted)]
    assert len(trained) == len(set(trained)) == 5  # no finished training was repeated
    log = open_store().log("killed")
    training_runs = [r for r in log.runs.event_runs() if r.data.tags["nas.type"] == "TrainingCompleted"]
    assert len(training_runs) == 5
    assert [e.seq for e in killed] == list(range(1, len(killed) + 1))  # no gap, no duplicate
    audit = subprocess.run([*nas, "audit", "killed"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert audit.returncode == 0, audit.stdout + audit.stderr


@pytest.mark.slow
def test_the_time_budget_is_wall_clock_and_the_last_training_ends_by_it() -> None:
    """search.time_budget_s counts the wall clock, not the seconds the events record: a training that would run
    far past it (1,000 epochs) ends at an epoch before the deadline, and no model is proposed after it (nor once
    less of it is left than an epoch of the best model)."""
    budget = 20.0
    sets = ["train.epochs=1000", "train.early_stopping_patience=0", f"search.time_budget_s={budget}"]
    config = load(ROOT / "params.yaml", [*SMALL, "search.max_models=100", *sets])
    store = MemoryStore()
    start = time.time()
    state = run_search(store, "clock", config)
    wall = time.time() - start
    completed = [e for e in store.log("clock").read() if isinstance(e, TrainingCompleted)]
    assert state.finish_reason is not None and state.finish_reason.startswith("time_budget_s=20 of wall clock ")
    assert completed and all(0 < len(e.epochs) < 1000 for e in completed)
    slowest_epoch = max(e.seconds / len(e.epochs) for e in completed)
    # it ends once the budget is spent, or earlier by less than an epoch, when no epoch of a new model fits
    assert state.elapsed_s is not None and budget - slowest_epoch <= state.elapsed_s <= wall
    assert wall < budget + 2 * slowest_epoch + 10  # one epoch's grace, and the search's own start and finish


@pytest.mark.slow
def test_each_proposal_sees_every_model_but_the_one_still_training_and_replays() -> None:
    """The proposal for model j sees models 1..j-2 (proposed while j-1 trains), so its refit fits j-2 outcomes;
    replay reproduces it."""
    store = MemoryStore()
    run_search(store, "ahead", load(ROOT / "params.yaml", [*SMALL, "search.max_models=5"]))
    events = store.log("ahead").read()
    assert len(outcome(events)) == 5 and verify(events) is None
    for i, e in enumerate(events):
        if isinstance(e, SurrogateRefitted):
            after = next(p for p in events[i:] if isinstance(p, ArchitectureProposed))
            assert e.observations == int(after.model_id[1:]) - 2, after.model_id
