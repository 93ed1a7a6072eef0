"""The ``nas-search`` Prefect flow: a thin orchestrator over ``nas.search`` (ask/tell).

Rounds are tasks: ``refit`` (CPU: the Gaussian process on the results so far, logged),
``propose`` (CPU: choose the next model with the logged surrogate, logged) and ``train`` (one
training slot: train from the parent's weights, log the outcome). While models
train, the next one is proposed from the results so far, as in Auto-Keras; with ``trainers = k``,
k models train at once. Training slots are the global concurrency limit ``nas-trainer``, so
several flows on one machine share them. Running the flow with the name of an existing search
resumes it: the event log says where to go on.
"""

from __future__ import annotations

import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.concurrency.sync import concurrency
from prefect.futures import PrefectFuture, as_completed

from nas.config import load
from nas.data import Splits
from nas.event_log.mlflow import MlflowEventLog, tracking_uri
from nas.report import publish_quietly
from nas.runner import open_search, splits_for
from nas.search import SearchService

TRAINER_LIMIT = "nas-trainer"


def bar(done: int, total: int, width: int = 20) -> str:
    """A text progress bar, e.g. ``[#####---------------] 1/4``."""
    filled = round(width * min(done, total) / total) if total else width
    return f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total}"


@lru_cache(maxsize=4)
def _splits(data_items: tuple[tuple[str, Any], ...]) -> Splits:
    """The prepared data, loaded once per process."""
    return splits_for({"data": dict(data_items)})


def _data_key(config: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(config["data"].items()))


@lru_cache(maxsize=8)
def _proposer_service(search_id: str, uri: str) -> SearchService:
    """One service per search and store for proposing: its anchors and event cache are built once per process."""
    return SearchService(MlflowEventLog(search_id, uri=uri))


@task(name="refit")
def refit(search_id: str) -> None:
    """Refit the surrogate on the results the next proposal may see, and log it (Bayesian only)."""
    service = _proposer_service(search_id, tracking_uri())
    service.refresh()
    service.refit()


@task(name="propose")
def propose(search_id: str) -> str | None:
    """Propose the next model with the logged surrogate; None when nothing new fits."""
    service = _proposer_service(search_id, tracking_uri())
    service.refresh()
    proposed = service.ask(1)
    return proposed[0].model_id if proposed else None


def _wait_until_training(service: SearchService, model_ids: list[str], timeout: float = 60.0) -> None:
    """Block until the given models have logged TrainingStarted (or ended), so a proposal computed next
    does not hold the GIL while their tasks start; TensorFlow's kernels release it once training runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(service.state.models[m].status != "proposed" for m in model_ids):
            return
        time.sleep(0.2)
        service.refresh()


@task(name="train", tags=[TRAINER_LIMIT])
def train(search_id: str, model_id: str) -> str:
    """Train one model in a training slot and log its outcome; returns trained or failed."""
    from nas.training import train_model

    logger = get_run_logger()
    with concurrency(TRAINER_LIMIT, occupy=1):
        service = SearchService(MlflowEventLog(search_id))
        model = service.state.models[model_id]
        if model.status in ("trained", "failed"):
            return model.status  # a retried task after the outcome was logged: never train twice
        splits = _splits(_data_key(dict(service.state.config)))

        epochs = service.state.config["train"]["epochs"]

        def epoch(i: int, logs: dict[str, float]) -> None:
            logger.info(
                "%s epoch %s loss %.4f val_accuracy %.4f",
                model_id,
                bar(i + 1, epochs, 10),
                logs.get("loss", float("nan")),
                logs.get("val_accuracy", float("nan")),
            )

        status = train_model(service, model_id, splits, on_epoch=epoch)
        record = service.state.models[model_id]
        logger.info(
            "%s %s: %s",
            model_id,
            status,
            f"val_accuracy {record.val_accuracy:.4f}" if status == "trained" else record.failure,
        )
        return status


def _ensure_trainer_limit(trainers: int) -> None:
    """Create the shared training-slot limit if this Prefect API has none yet; warn when it is below ``trainers``.

    The limit is shared by every flow on the API, so an existing one is left as its owner set it.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(TRAINER_LIMIT).limit
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=TRAINER_LIMIT, limit=trainers))
            except ObjectAlreadyExists:
                pass
            return
    if limit < trainers:
        get_run_logger().warning(
            "search.trainers=%d but the shared limit %r allows %d training(s) at once on this Prefect API; "
            "raise it with: prefect gcl update %s --limit %d",
            trainers,
            TRAINER_LIMIT,
            limit,
            TRAINER_LIMIT,
            trainers,
        )


def search_config(
    config_path: str | None = None,
    overrides: list[str] | None = None,
    **params: Any,
) -> dict[str, Any]:
    """params.yaml (or ``config_path``) with the flow's named parameters and ``overrides`` applied, validated."""
    names = {
        "dataset": "data.dataset",
        "strategy": "search.strategy",
        "max_models": "search.max_models",
        "time_budget_s": "search.time_budget_s",
        "seed": "search.seed",
        "trainers": "search.trainers",
        "max_params": "search.max_params",
        "epochs": "train.epochs",
        "batch_size": "train.batch_size",
    }
    sets = [f"{names[k]}={v}" for k, v in params.items() if v is not None]
    return load(Path(config_path) if config_path else None, [*sets, *(overrides or [])])


@flow(name="nas-search", log_prints=True)
def nas_search(
    name: str = "nas-search",
    dataset: str | None = None,
    strategy: str | None = None,
    max_models: int | None = None,
    time_budget_s: float | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    trainers: int | None = None,
    max_params: int | None = None,
    overrides: list[str] | None = None,
    config_path: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) search ``name``. Unset parameters come from params.yaml; returns the summary."""
    from nas.replay import summary

    def make_config() -> dict[str, Any]:
        return search_config(
            config_path,
            overrides,
            dataset=dataset,
            strategy=strategy,
            max_models=max_models,
            time_budget_s=time_budget_s,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            trainers=trainers,
            max_params=max_params,
        )

    service, _ = open_search(MlflowEventLog(name), make_config, lambda c: _splits(_data_key(dict(c))), print)
    slots = service.state.config["search"]["trainers"]
    _ensure_trainer_limit(slots)
    running: dict[str, PrefectFuture] = {}
    # Proposed, not yet training: what a crash left behind, then one proposal made ahead of time.
    queued = [m.model_id for m in service.state.unfinished]
    exhausted = False
    while True:
        # A training is submitted only into a free slot, so it starts at once rather than polling for one.
        submitted = []
        while queued and len(running) < slots:
            model_id = queued.pop(0)
            running[model_id] = train.submit(name, model_id)
            submitted.append(model_id)
        service.refresh()
        _wait_until_training(service, submitted)
        order = list(service.state.models)
        # The next proposal may only see models 1 .. j-1-trainers (see Proposing.batch): wait for those.
        waiting_on = [m for m in [*running, *queued] if order.index(m) < len(order) - slots]
        can_propose = not exhausted and not queued and service.stop_reason() is None and not service.state.finished
        if can_propose and not waiting_on:
            refit(name)  # both computed on the CPU while the submitted models train
            proposed = propose(name)
            if proposed is None:
                exhausted = True
            else:
                queued.append(proposed)
            continue
        if not running:
            break
        first = next(as_completed(list(running.values())))
        model_id = next(m for m, f in running.items() if f is first)
        running.pop(model_id).result()
        state = service.refresh()
        done = state.count("trained") + state.count("failed")
        best = f"best {state.best.model_id} {state.best.val_accuracy:.4f}" if state.best else "no model trained yet"
        print(f"models {bar(done, state.config['search']['max_models'])}  {best}")
        publish_quietly(service.log, print)  # report and best_val_accuracy on the parent run, every round
    service.refresh()
    if not service.state.finished:
        service.finish(service.stop_reason() or "no new architecture within the caps")
    publish_quietly(service.log, print)
    info = summary(service.state, service.state.last_seq)
    print(f"search {name} finished: best {info['best_model']} val_accuracy {info['best_val_accuracy']}")
    return info


if __name__ == "__main__":
    # `python -m flows.nas_search` serves the flow as deployment 'nas-search/local'.
    nas_search.serve(name=os.environ.get("NAS_DEPLOYMENT", "local"))
