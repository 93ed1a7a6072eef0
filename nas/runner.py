"""Run or resume a search in this process, one model at a time: propose, train, record, repeat.

The Prefect flow runs the same steps as tasks; this is the plain loop that the command line,
the tests and the crash drills use. Resuming is running again: the log says where to go on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from nas.data import Splits, fingerprint, load_splits
from nas.event_log import EventLog
from nas.report import publish_quietly
from nas.search import SearchService
from nas.state import SearchState

Progress = Callable[[str], None]


def splits_for(config: Mapping[str, Any]) -> Splits:
    """The data a configuration names, split as it says (ValueError for an unknown dataset)."""
    d = config["data"]
    return load_splits(d["dataset"], val_fraction=d["val_fraction"], test_fraction=d["test_fraction"], seed=d["seed"])


def check_same_data(state: SearchState, splits: Splits) -> None:
    """ValueError when ``splits`` are not the data the search started on (a resume must not switch data)."""
    if state.dataset_fingerprint != fingerprint(splits):
        raise ValueError(
            f"the data of search {state.search_id!r} changed since it started (its fingerprint differs); "
            "resume with the same dataset and split settings"
        )


def open_search(
    log: EventLog,
    make_config: Callable[[], Mapping[str, Any]] | None,
    load: Callable[[Mapping[str, Any]], Splits],
    progress: Progress,
) -> tuple[SearchService, Splits]:
    """The service of a search and its data, after starting it or readying its resume.

    A new search takes ``make_config()`` (None: there must be a logged search to resume) and logs
    SearchStarted only once the data has loaded and passed its checks. A resumed one is repaired
    (a crash's leftovers) and refused if its data changed.
    """
    repair = getattr(log, "repair", None)
    if repair is not None:
        for line in repair():
            progress(f"repaired: {line}")
    service = SearchService(log)
    if service.state.started:
        splits = load(service.state.config)
        check_same_data(service.state, splits)
        progress(f"resuming search {log.search_id} at event {service.state.last_seq}")
        return service, splits
    if make_config is None:
        raise ValueError(f"there is no search {log.search_id!r} to resume; start it with nas search")
    config = make_config()
    splits = load(config)  # bad data is refused before anything is logged
    service.start(log.search_id, config, splits.input_shape, splits.num_classes, fingerprint(splits))
    progress(f"started search {log.search_id}: {splits.name}, {len(splits.x_train)} training examples")
    return service, splits


def run_search(
    log: EventLog,
    config: Mapping[str, Any] | None,
    splits: Splits | None = None,
    *,
    progress: Progress = lambda line: None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> SearchState:
    """Start the search of ``log`` with ``config``, or resume it (config None: use the logged one).

    Runs until the budget is spent.

    Finished trainings are never repeated; a training that started and never ended is trained again.
    """
    from nas.training import train_model

    service, splits = open_search(
        log, None if config is None else lambda: config, lambda c: splits or splits_for(c), progress
    )
    while True:
        for model in service.state.unfinished:
            parent = f" from {model.parent_id}" if model.parent_id else ""
            progress(f"training {model.model_id}{parent} ({model.arch.param_count:,} params)")
            status = train_model(service, model.model_id, splits, on_epoch=on_epoch)
            record = service.state.models[model.model_id]
            detail = f"val_accuracy {record.val_accuracy:.4f}" if status == "trained" else f"failed: {record.failure}"
            progress(f"{model.model_id} {detail}")
            publish_quietly(log, progress)  # the report and progress metric on the parent run (MLflow logs)
        if service.state.finished:
            break
        reason = service.stop_reason()
        if reason is None:
            service.refit()
        if reason is None and not service.ask(1):
            reason = "no new architecture within the caps"
        if reason is not None:
            service.finish(reason)
            progress(f"finished: {reason}")
            publish_quietly(log, progress)
            break
    return service.state
