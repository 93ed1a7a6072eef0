"""The ``nas-search`` Prefect flow: the search's rounds (``nas.drivers.runner.run_rounds``) as Prefect tasks.

Each round is a ``refit`` task (the Gaussian process on the results so far, logged), a ``propose mN`` task (the next
model, logged) and ``train mN`` tasks in the slots of the global concurrency limit ``nas-trainer`` (see
``flows.trainings``). The next model is proposed while every slot trains, as in Auto-Keras. A run started from
Python (``nas search``) is named after the search; a deployment run keeps the name it was created with (``prefect
deployment run ... --flow-run-name NAME``). Its artifacts show the models so far and the progress (``flows.story``).
Running the flow with the name of an existing search resumes it: the event log says where to go on. One runner per
search: the flow holds the search's lease while it runs.

Settings arrive as data: ``settings`` (a validated settings dict, what ``nas search`` passes), or, for deployments,
``params.yaml`` (or ``config_path``) with the named parameters and ``overrides`` applied.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from flows.local_api import shared_api
from flows.slots import TRAINER_LIMIT
from flows.story import FlowStory
from flows.trainings import DeployedTrainings, TaskTrainings, data_of
from nas.drivers.config import load, located, validate
from nas.drivers.publish import Publisher
from nas.drivers.runner import LeaseKeeper, RoundHooks, Trainings, env_seconds, open_search, process_holder, run_rounds
from nas.drivers.signals import stop_on_signals
from nas.ledger.log import ConcurrencyError
from nas.ledger.ports import LeaseHeld, holder_name
from nas.ledger.replay import summary
from nas.ledger.service import SearchService
from nas.tracking import open_store, tracking_uri
from nas.training.stop import StopRequested


@lru_cache(maxsize=8)
def _proposer(search_id: str, uri: str) -> SearchService:
    """One service per search and store for proposing: its anchors and event cache are built once per process."""
    return SearchService(open_store(uri).log(search_id))


@task(name="refit", task_run_name="refit")
def refit_task(search_id: str, uri: str) -> None:
    """Refit the surrogate on the results the next proposal may see, and log it (Bayesian only)."""
    service = _proposer(search_id, uri)
    service.refresh()
    service.refit()


@task(name="propose", task_run_name="propose {model_id}")
def propose_task(search_id: str, uri: str, model_id: str, elapsed_s: float | None = None) -> str | None:
    """Propose the next model (``model_id``) with the logged surrogate, logged with the search's wall clock
    ``elapsed_s`` (the flow's); None when nothing new fits."""
    service = _proposer(search_id, uri)
    service.refresh()
    proposed = service.ask(1, elapsed_s=elapsed_s)
    return proposed[0].model_id if proposed else None


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


def _holder() -> str:
    """Who runs the search: this flow run, or this process."""
    from prefect.runtime import flow_run

    if flow_run.id:
        return holder_name(f"flow run {flow_run.name} ({flow_run.id})")
    return process_holder()


def _crash_flow_run(holder: str) -> None:
    """Mark the flow run named in ``holder`` Crashed if Prefect still shows it running (it died unseen)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    found = re.search(r"\(([0-9a-f-]{36})\)", holder)
    if not found:
        return
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(found.group(1)))
            if run.state is not None and not run.state.is_final():
                message = f"its lease expired; {_holder()} took the search over"
                client.set_flow_run_state(run.id, Crashed(message=message), force=True)
    except Exception as e:  # cosmetic: the search goes on either way
        print(f"could not mark {holder} crashed ({type(e).__name__}: {e})")


NAMED = {
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


def run_name() -> str:
    """The flow run's name: the search's, unless the run came from a deployment, whose runs keep the name they
    were created with (an operator's ``--flow-run-name``, or Prefect's own), as Prefect users expect."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    run = context.flow_run if context is not None else None
    if run is not None and run.deployment_id is not None:
        return run.name
    parameters = (context.parameters if context is not None else None) or {}
    return str(parameters.get("name") or "nas-search")


@flow(name="nas-search", flow_run_name=run_name, log_prints=True)
def nas_search(
    name: str = "nas-search",
    settings: dict[str, Any] | None = None,
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
    """Run (or resume) search ``name``; returns its summary.

    A new search takes ``settings`` (validated again here), or else params.yaml (``config_path``) with the
    named parameters and ``overrides``; an existing one goes on with its logged settings. Bad settings or
    data fail the flow run before anything is written; LeaseHeld if another runner is running the search.
    SIGINT or SIGTERM (Prefect's cancellation among them) stops it at the next batch and ends the flow run
    Cancelled, with the interrupted trainings to be trained again on resume; a second one stops it at once.
    A refusal (bad input, a log that fails its checks, another runner) ends it Failed with the reason as its
    message and no traceback; the flow's result raises it.
    """
    with stop_on_signals():  # inside the flow run: Prefect puts its own SIGTERM handler in place around it
        try:
            return _search(name, settings, dataset, strategy, max_models, time_budget_s, epochs, batch_size, seed,
                           trainers, max_params, overrides, config_path)  # fmt: skip
        except StopRequested as e:
            from prefect.states import Cancelled

            print(f"search {name} stopped ({e}); continue it with: nas resume {name}")
            return Cancelled(message=f"stopped by {e}; continue it with: nas resume {name}")  # type: ignore[return-value]
        except (ValueError, LeaseHeld) as e:  # bad input, a log that fails its checks, another runner: one sentence
            from prefect.states import Failed

            return Failed(message=str(e), data=e)  # type: ignore[return-value]


def _search(
    name: str,
    settings: dict[str, Any] | None,
    dataset: str | None,
    strategy: str | None,
    max_models: int | None,
    time_budget_s: float | None,
    epochs: int | None,
    batch_size: int | None,
    seed: int | None,
    trainers: int | None,
    max_params: int | None,
    overrides: list[str] | None,
    config_path: str | None,
) -> dict[str, Any]:
    """The flow's body: open (or resume) the search, run its rounds, return its summary."""
    uri = tracking_uri()
    store = open_store(uri)
    config: dict[str, Any] | None = None
    if not store.exists(name):
        if settings is not None:
            config = validate(settings)
        else:
            given = {
                "dataset": dataset,
                "strategy": strategy,
                "max_models": max_models,
                "time_budget_s": time_budget_s,
                "epochs": epochs,
                "batch_size": batch_size,
                "seed": seed,
                "trainers": trainers,
                "max_params": max_params,
            }
            sets = [f"{NAMED[k]}={v}" for k, v in given.items() if v is not None]
            config = located(load(Path(config_path) if config_path else None, [*sets, *(overrides or [])]))
    deployment = os.environ.get("NAS_TRAIN_DEPLOYMENT", "")
    trainings: Trainings = (
        DeployedTrainings(deployment, name, uri, env_seconds("NAS_TRAINING_LIVENESS_S", 30.0))
        if deployment
        else TaskTrainings(name, uri)
    )
    keeper = LeaseKeeper(
        store.lease(name), _holder(), env_seconds("NAS_LEASE_TTL_S", 60.0), print, on_takeover=_crash_flow_run
    )
    try:
        try:
            service, splits = open_search(store, name, config, data_of, keeper, print)
        except ConcurrencyError as e:  # another runner started it at the same moment
            raise LeaseHeld(f"search {name!r} was started by another runner at the same moment; this one stops") from e
        if shared_api():
            _ensure_trainer_limit(service.state.config["search"]["trainers"])
        # The flow run's artifacts are updated by the publisher's thread too: off the round's critical path.
        story = FlowStory(name, store.reports(name).location())
        publisher = Publisher(store, service, splits, print, also=story.round)
        hooks = RoundHooks(
            refit=lambda: refit_task(name, uri),
            propose=lambda: propose_task(name, uri, f"m{len(service.refresh().models) + 1}", service.elapsed_s()),
            progress=print,
            on_round=publisher.round,
        )
        try:
            state = run_rounds(service, trainings, keeper, hooks)
        finally:
            trainings.close()
            publisher.close()
        info = summary(state)
        print(f"search {name} finished: best {info['best_model']} val_accuracy {info['best_val_accuracy']}")
        return info
    finally:
        keeper.release()


if __name__ == "__main__":
    # `python -m flows.nas_search` serves the flow as deployment 'nas-search/local'.
    nas_search.serve(name=os.environ.get("NAS_DEPLOYMENT", "local"))
