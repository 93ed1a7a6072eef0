"""The training step of a search: train one proposed model from its parent's weights and log the outcome."""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.architectures.graph import Architecture
from nas.architectures.morphisms import apply_chain
from nas.architectures.weights import Weights, init_weights, load_weights, save_weights, standardize
from nas.data import Splits
from nas.ledger.events import finite_or_none
from nas.ledger.proposing import seed_for
from nas.ledger.service import IntegrityError, SearchService
from nas.ledger.state import ModelStatus, SearchState
from nas.training.stop import StopRequested, TrainingTimeout, check_stop

if TYPE_CHECKING:
    from nas.training.fit import TrainConfig, TrainResult

PROBE = 64  # validation examples the preservation error is measured on


def _classify(error: BaseException) -> str:
    """The failure reason an exception stands for."""
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, MemoryError) or "ResourceExhausted" in text or "OOM" in text or "out of memory" in text:
        return "out_of_memory"
    if isinstance(error, TrainingTimeout):
        return "timeout"
    return "error"


def train_config(train: Mapping[str, Any], learning_rate: float | None = None) -> TrainConfig:
    """How a search with the ``train`` settings (a search's, as its fold completes them) trains a model: at the
    ``learning_rate`` its proposal chose, else ``train.learning_rate``, on ``train.schedule``."""
    from nas.training.fit import TrainConfig

    return TrainConfig(
        train["epochs"],
        train["batch_size"],
        train["learning_rate"] if learning_rate is None else learning_rate,
        train["early_stopping_patience"],
        train["min_steps"],
        train["schedule"],
    )


def expected_epoch_seconds(state: SearchState, model_id: str) -> float | None:
    """The wall-clock seconds one epoch of ``model_id``'s training should take: its parent's seconds per epoch,
    scaled by how much more (or less) work an example costs in it than in the parent (``Architecture.work``);
    None for a model without a trained parent."""
    model = state.models[model_id]
    parent = state.models[model.parent_id] if model.parent_id else None
    per_epoch = None if parent is None else parent.epoch_seconds
    if parent is None or per_epoch is None:
        return None
    return per_epoch * model.arch.work / parent.arch.work


def planned_epochs(epochs: int, per_epoch: float | None, seconds_left: float | None) -> int:
    """How many of ``epochs`` a training plans: those that fit in ``seconds_left`` at ``per_epoch`` seconds each
    (0 where none does), or all of them where either is unknown (None)."""
    if per_epoch is None or seconds_left is None or per_epoch <= 0:
        return epochs
    return max(0, min(epochs, int(seconds_left // per_epoch)))


def run_training(
    service: SearchService,
    model_id: str,
    data: Splits,
    *,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    deadline: float | None = None,
) -> ModelStatus:
    """Log TrainingStarted, train ``model_id`` from its parent's weights, log the outcome; returns its status.

    ``deadline`` (a Unix time: when the search's wall-clock budget runs out) plans fewer epochs than
    configured where, at the seconds per epoch ``expected_epoch_seconds`` gives, fewer fit before it (the learning-rate
    schedule spans the planned epochs, so a cosine one still ends at 0; TrainingStarted records the plan); where
    none fits, the model is not trained but logged as failed for ``budget``. A training ends after the epoch
    past which another epoch, as long as the last one, would end beyond the deadline, and at the end of the batch
    that passes the deadline (an epoch that takes longer than expected is cut short, validated and kept). Past
    ``train.timeout_s`` it fails for ``timeout`` at the end of that batch.

    A model whose training fails becomes a ``TrainingFailed`` event (out of memory, NaN loss,
    timeout, or any other error with its text) and the search goes on. Parent weights that fail their
    recorded hash are not a training failure: IntegrityError propagates and the search stops. A stop asked
    (``nas.training.stop``) ends the training at the next batch with StopRequested and no outcome logged.
    """
    from nas.training.fit import fit, make_deterministic

    check_stop()
    state = service.state
    t = state.config["train"]
    config = train_config(t, state.models[model_id].learning_rate)
    plan = _plan(service, model_id, config.epochs_for(len(data.x_train)), deadline)
    if plan is None:
        return ModelStatus.FAILED
    state = service.state
    model = state.models[model_id]
    files = tempfile.TemporaryDirectory()
    diagram = _diagram(model.arch, Path(files.name) / "architecture.png", model_id)
    number = int(model_id.lstrip("m"))
    start = time.perf_counter()
    try:
        train_seed = int(seed_for(state.seed, number, 1).integers(2**31))
        make_deterministic(train_seed)
        weights, error = _starting_weights(service, model_id, data)
        epoch_ends = [time.perf_counter()]

        def watch(epoch: int, logs: dict[str, float]) -> bool:
            """After each epoch: stop before an epoch as long as the last would carry the search past its
            deadline."""
            if on_epoch is not None:
                on_epoch(epoch, logs)
            now = time.perf_counter()
            last_epoch, epoch_ends[0] = now - epoch_ends[0], now
            return deadline is not None and time.time() + last_epoch > deadline

        if plan != config.epochs_for(len(data.x_train)):
            config = replace(config, epochs=plan, min_steps=0)  # exactly the planned epochs
        result = fit(
            model.arch,
            weights,
            data.x_train,
            data.y_train,
            data.x_val,
            data.y_val,
            config,
            seed=train_seed,
            on_epoch=watch,
            deadline=deadline,
            timeout_s=t["timeout_s"],
        )
    except (IntegrityError, StopRequested):
        files.cleanup()
        raise
    except Exception as e:  # every failure is recorded and the search goes on
        with files:
            seconds = time.perf_counter() - start
            service.training_failed(model_id, _classify(e), f"{type(e).__name__}: {e}", seconds, diagram)
        return ModelStatus.FAILED
    with files:
        return _record_outcome(service, model_id, result, error, time.perf_counter() - start, Path(files.name), diagram)


def _plan(service: SearchService, model_id: str, configured: int, deadline: float | None) -> int | None:
    """The epochs ``model_id`` trains (``planned_epochs``), with TrainingStarted logged (and the plan where it is
    fewer than ``configured``); None, with the model logged as failed for ``budget``, where not one fits."""
    seconds_left = None if deadline is None else deadline - time.time()
    per_epoch = expected_epoch_seconds(service.state, model_id)
    plan = planned_epochs(configured, per_epoch, seconds_left)
    if plan == 0:
        reason = (
            f"{seconds_left:.1f} s of the wall-clock budget left, less than one epoch of it (about {per_epoch:.1f} s)"
        )
        service.training_failed(model_id, "budget", reason, 0.0)
        return None
    service.training_started(model_id, None if plan == configured else plan)
    return plan


def _starting_weights(service: SearchService, model_id: str, data: Splits) -> tuple[Weights, float | None]:
    """The weights ``model_id`` starts from and how far they change its parent's function on a probe of the
    validation split: a first model's initialised and standardised (no parent: None), a child's its parent's
    through the logged morphisms (the parent's weights file checked against its hash: IntegrityError)."""
    from nas.training.builder import preservation_error

    state = service.state
    model = state.models[model_id]
    number = int(model_id.lstrip("m"))
    if model.parent_id is None:
        return standardize(model.arch, init_weights(model.arch, seed_for(state.seed, number, 2)), data.x_train), None
    parent = state.models[model.parent_id]
    assert parent.completed_seq is not None, f"parent {parent.model_id} of {model_id} has no weights"
    parent_weights = load_weights(service.weights_file(parent.model_id))
    parent_arch, chain = service.chain(model_id)
    child_arch, weights = apply_chain(parent_arch, parent_weights, chain)
    assert child_arch.id == model.arch.id, f"replaying the morphisms of {model_id} gave another architecture"
    return weights, preservation_error(parent_arch, parent_weights, model.arch, weights, data.x_val[:PROBE])


def _record_outcome(
    service: SearchService,
    model_id: str,
    result: TrainResult,
    error: float | None,
    seconds: float,
    folder: Path,
    diagram: dict[str, Path],
) -> ModelStatus:
    """Log a finished fit's outcome: failed for ``nan_loss`` where a loss was not finite, else completed with its
    epochs and its weights (written to ``folder``)."""
    if any(not math.isfinite(h.get("loss", math.nan)) for h in result.history):
        service.training_failed(model_id, "nan_loss", "the training loss became NaN or infinite", seconds, diagram)
        return ModelStatus.FAILED
    epochs = [{k: finite_or_none(v) for k, v in h.items()} for h in result.history]
    path = folder / "weights.npz"
    save_weights(path, result.weights)
    accuracy = float(result.val_accuracy)
    service.training_completed(model_id, accuracy, epochs, finite_or_none(error), seconds, path, diagram)
    return ModelStatus.TRAINED


def _diagram(arch: Architecture, path: Path, model_id: str) -> dict[str, Path]:
    """The architecture diagram to attach to the training's outcome ({} if it cannot be drawn)."""
    from nas.report.figures import plot_architecture

    try:
        plot_architecture(arch, path, f"{model_id}: {arch.param_count:,} parameters, {len(arch.layers)} layers")
    except Exception:  # a picture is not worth a failed training
        return {}
    return {path.name: path}
