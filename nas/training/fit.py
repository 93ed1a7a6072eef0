"""Fitting an architecture with Keras (Adam or AdamW, early stopping, our own batch order). Imports Keras."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from nas.architectures.graph import Architecture
from nas.architectures.weights import Weights
from nas.training import SCHEDULES
from nas.training.backend import keras
from nas.training.builder import build_model, read_weights
from nas.training.stop import TrainingTimeout, check_stop, stop_requested

EpochCallback = Callable[[int, dict[str, float]], bool | None]  # True stops training


def make_deterministic(seed: int) -> None:
    """Seed Python, numpy and the backend, and ask TensorFlow for deterministic ops (CPU runs repeat exactly)."""
    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


@dataclass(frozen=True)
class TrainConfig:
    """How one model is trained."""

    epochs: int = 5
    batch_size: int = 64
    learning_rate: float = 1e-3
    early_stopping_patience: int = 2
    min_steps: int = 0  # more epochs than ``epochs`` where an epoch is short, to take at least this many steps
    schedule: str = "constant"  # or "cosine": from learning_rate down to 0 over the training's steps

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "early_stopping_patience", "min_steps"):
            value = getattr(self, name)
            least = 0 if name in ("early_stopping_patience", "min_steps") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                sign = "non-negative" if least == 0 else "positive"
                raise ValueError(f"train.{name}={value!r} must be a {sign} integer")
        if not self.learning_rate > 0:
            raise ValueError(f"train.learning_rate={self.learning_rate!r} must be positive")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"train.schedule={self.schedule!r} must be one of {', '.join(SCHEDULES)}")

    def epochs_for(self, examples: int) -> int:
        """Epochs to train on ``examples`` training examples: ``epochs``, or more on data so small that an epoch
        is only a few steps (a table of 100 rows is 2 steps of 64), enough for ``min_steps`` steps."""
        steps_per_epoch = max(1, -(-examples // self.batch_size))
        return max(self.epochs, -(-self.min_steps // steps_per_epoch))

    def rate_at(self, step: int, steps: int) -> float:
        """The learning rate of step ``step`` (from 0) of a training of ``steps`` steps: Keras' ``CosineDecay``
        to 0 with the cosine schedule, ``learning_rate`` throughout with the constant one."""
        if self.schedule == "constant":
            return self.learning_rate
        return self.learning_rate * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))


@dataclass
class TrainResult:
    """What one training produced: the kept weights, the epoch they come from, the per-epoch record."""

    weights: dict[str, tuple[np.ndarray, ...]]
    history: list[dict[str, float]] = field(default_factory=list)
    kept_epoch: int = 0  # index into history of the epoch whose weights were kept
    seconds: float = 0.0

    @property
    def val_accuracy(self) -> float:
        """Validation accuracy of the kept weights."""
        return self.history[self.kept_epoch]["val_accuracy"]


class _ShuffledBatches(keras.utils.PyDataset):
    """Training batches in an order drawn from this dataset's own generator, reshuffled every epoch."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> None:
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x))

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        return self.x[idx], self.y[idx]

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.x))


class _EpochHook(keras.callbacks.Callback):
    """Calls ``fn(epoch, logs)`` after every epoch; stops the training where it returns True or the epoch's loss is
    NaN or infinite. Only epoch hooks: a callback with ``on_train_batch_end`` makes Keras dispatch every batch's
    callbacks synchronously (``CallbackList._configure_async_dispatch``), the device waiting for Python."""

    def __init__(self, fn: EpochCallback | None) -> None:
        super().__init__()
        self.fn = fn

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        values = {k: float(v) for k, v in (logs or {}).items()}
        if not math.isfinite(values.get("loss", 0.0)):
            self.model.stop_training = True
        if self.fn is not None and self.fn(epoch, values):
            self.model.stop_training = True


class _Watchdog:
    """Stops a training from a thread of its own, within ``TICK_S`` of the moment: a stop asked of the search
    (``nas.training.stop``), its timeout, its deadline. Keras reads ``model.stop_training`` after every batch, so the
    batch running then is the last; nothing runs in the training loop itself."""

    TICK_S = 0.05

    def __init__(self, model: keras.Model, deadline: float | None, timeout_s: float | None) -> None:
        self.model, self.deadline, self.timeout_s = model, deadline, timeout_s
        self.reason: str | None = None  # "stop", "timeout" or "deadline" once it stopped the training
        self.start = time.perf_counter()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="nas-training-watchdog", daemon=True)

    def __enter__(self) -> _Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._done.wait(self.TICK_S):
            if self.reason is not None:
                pass
            elif stop_requested():
                self.reason = "stop"
            elif self.timeout_s is not None and time.perf_counter() - self.start > self.timeout_s:
                self.reason = "timeout"
            elif self.deadline is not None and time.time() > self.deadline:
                self.reason = "deadline"
            if self.reason is not None:
                # Every tick, not once: ``fit`` clears the flag when it starts, which may come after the moment.
                self.model.stop_training = True

    def check(self, epoch: int, epochs: int) -> None:
        """After a training that ended in epoch ``epoch`` of ``epochs``: StopRequested if a stop was asked,
        TrainingTimeout past the timeout."""
        if self.reason == "stop":
            check_stop()
        if self.reason == "timeout":
            raise TrainingTimeout(
                f"training took longer than train.timeout_s={self.timeout_s:g} (stopped in epoch {epoch} of {epochs})"
            )


def fit(
    arch: Architecture,
    weights: Weights | None,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    config: TrainConfig,
    *,
    seed: int = 0,
    on_epoch: EpochCallback | None = None,
    deadline: float | None = None,
    timeout_s: float | None = None,
) -> TrainResult:
    """Fit ``arch`` from ``weights`` (Keras' initialisation if None) with Adam and early stopping, for
    ``config.epochs_for(len(x_train))`` epochs at most.

    With ``early_stopping_patience`` > 0, stops after that many epochs without a better validation loss and keeps
    the weights of the best epoch; with 0, trains every epoch and keeps the last. Without validation data (``x_val``
    None, as in a final fit on train + validation) early stopping must be 0. ``on_epoch(epoch, logs)`` is called
    after every epoch; returning True stops training there, as does a NaN or infinite loss. Past ``deadline``
    (``time.time()``) the training stops after the batch running then: the epoch it cut short is validated and ends
    as any other, so it is in the history. Past ``timeout_s`` seconds it stops the same way and raises
    TrainingTimeout; a stop asked of the search (``nas.training.stop``) stops it and raises StopRequested. Each
    epoch of the history records the ``learning_rate`` of its first step. ``seed`` fixes the batch order and the
    dropout masks without touching global random state, so trainings running side by side repeat exactly.
    """
    validation = None if x_val is None or y_val is None else (x_val, y_val)
    if validation is None and config.early_stopping_patience:
        raise ValueError("early stopping needs validation data; set train.early_stopping_patience=0 to train without")
    model = build_model(arch, weights, seed=seed)
    batches = _ShuffledBatches(x_train, y_train, config.batch_size, seed)
    epochs = config.epochs_for(len(x_train))
    steps = epochs * len(batches)
    rate: float | keras.optimizers.schedules.LearningRateSchedule = config.learning_rate
    if config.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=steps)
    model.compile(
        optimizer=keras.optimizers.Adam(rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    callbacks: list[keras.callbacks.Callback] = [_EpochHook(on_epoch)]
    if config.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=config.early_stopping_patience, restore_best_weights=True
            )
        )
    start = time.perf_counter()
    with _Watchdog(model, deadline, timeout_s) as watchdog:
        logged = model.fit(
            batches,
            validation_data=validation,
            epochs=epochs,
            callbacks=callbacks,
            shuffle=False,  # Keras would reorder the batches with Python's global `random`; ours are already shuffled
            verbose=0,
        )
    watchdog.check(len(logged.history.get("loss", ())), epochs)
    seconds = time.perf_counter() - start
    keys = list(logged.history)
    history = [
        {**{k: float(logged.history[k][e]) for k in keys}, "learning_rate": config.rate_at(e * len(batches), steps)}
        for e in range(len(logged.history["loss"]))
    ]
    kept = len(history) - 1
    if config.early_stopping_patience:
        # As EarlyStopping restores: the first epoch with the lowest validation loss (NaN never improves).
        kept = int(np.argmin(np.nan_to_num([h["val_loss"] for h in history], nan=np.inf)))
    return TrainResult(read_weights(model, arch), history, kept, seconds)
