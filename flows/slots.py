"""Training slots: the global concurrency limit ``nas-trainer`` that every flow on one Prefect API shares. A slot
is held with a lease renewed while it trains, so the server frees a dead holder's slot; a training that waits
for one says so, and who holds the slots, at once and every ``WAITING_SAY_S``."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from nas.training.stop import check_stop

TRAINER_LIMIT = "nas-trainer"
TASK_LEASE_S = 60.0  # the lease of a slot held in the flow's process (renewed every third of it): a server frees
# the slot of a process that died holding it within this, and its lease service's loop (15 s)
BUSY_RETRY_S = 0.05  # how soon a slot request the server's database could not serve is sent again
FULL_RETRY_S = 1.0  # the longest wait before asking again for a slot of a full limit
WAITING_SAY_S = 60.0  # how often a training waiting for a slot says so again


def _running_searches(client: Any) -> str:
    """The running flow runs of the search and training flows on this API (those that can hold a slot)."""
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    try:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
            ),
            flow_filter=FlowFilter(name=FlowFilterName(any_=["nas-search", "nas-train"])),
            limit=20,
        )
    except Exception as e:  # only a message depends on it
        return f"its holders could not be read ({type(e).__name__})"
    names = [f"{r.name} (since {r.start_time:%H:%M:%S})" if r.start_time else r.name for r in runs]
    return "running: " + (", ".join(names) if names else "no search or training flow run; a dead one's lease lapses")


def _waiting_line(client: Any, limit: str) -> str:
    """What a training waiting for a slot of ``limit`` waits for, and who holds the slots."""
    try:
        found = client.read_global_concurrency_limit_by_name(limit)
        taken = f"{found.active_slots} of {found.limit} slots taken"
    except Exception as e:  # only a message depends on it
        taken = f"its slots could not be read ({type(e).__name__})"
    return (
        f"waiting for a training slot: the Prefect concurrency limit {limit!r} on {client.api_url} has {taken}; "
        f"{_running_searches(client)}. A slot held by a process that died frees when its lease lapses "
        f"(at most {TASK_LEASE_S:.0f} s and the server's lease check); "
        f"prefect gcl update {limit} --active-slots 0 frees every slot by hand"
    )


def _slot_holder() -> Any:
    """Who holds a slot, as Prefect shows it: this task run, else this flow run, else nobody named."""
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.runtime import flow_run, task_run

    if task_run.id:
        return ConcurrencyLeaseHolder(type="task_run", id=task_run.id)
    if flow_run.id:
        return ConcurrencyLeaseHolder(type="flow_run", id=flow_run.id)
    return None


@contextmanager
def training_slot(
    lease_s: float, limit: str = TRAINER_LIMIT, renew_s: float | None = None, wait: bool = True
) -> Iterator[bool]:
    """Hold one slot of the global concurrency limit ``limit`` for the block: wait for a free slot, keep its
    lease (``lease_s``, at least 60) renewed every ``renew_s`` (a third of the lease unless given) while the
    block runs, release it after. Yields True; with ``wait`` False, yields False at once (holding nothing)
    when the limit is full. A process that dies holding the slot frees it when the lease runs out (on a
    server that runs Prefect's lease service). A limit that does not exist limits nothing. While it waits,
    it says what for and who holds the slots, at once and every ``WAITING_SAY_S``; StopRequested if a stop
    is asked meanwhile.

    Why not ``prefect.concurrency.sync.concurrency``: on a SQLite-backed Prefect server (the temporary one
    ``nas search`` starts) its acquisition often meets a database locked by other writes, and Prefect's HTTP
    client retries that after 2 s: 2 s lost per training. This asks with the
    client's lease calls directly, Prefect's HTTP retries off, and asks again after ``BUSY_RETRY_S`` when the
    database was busy and after the server's Retry-After (at most ``FULL_RETRY_S``) when the limit is full.
    """
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    holder = _slot_holder()
    with temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 0}), get_client(sync_client=True) as client:
        granted: dict[str, Any] | None = None
        said = -WAITING_SAY_S
        while granted is None:
            check_stop()
            try:
                granted = client.increment_concurrency_slots_with_lease(
                    names=[limit], slots=1, mode="concurrency", lease_duration=lease_s, holder=holder
                ).json()
            except httpx.HTTPStatusError as e:
                if e.response.status_code == 423:
                    if not wait:
                        break
                    if time.monotonic() - said >= WAITING_SAY_S:
                        print(_waiting_line(client, limit), flush=True)
                        said = time.monotonic()
                    time.sleep(min(float(e.response.headers.get("Retry-After", FULL_RETRY_S)), FULL_RETRY_S))
                elif e.response.status_code == 503:
                    time.sleep(BUSY_RETRY_S)
                else:
                    raise
            except httpx.TransportError:
                time.sleep(FULL_RETRY_S)
    if granted is None:
        yield False  # the limit is full and the caller does not wait
        return
    if not granted.get("limits"):
        yield True  # no such limit: nothing to hold, nothing to wait for
        return
    lease_id, stop = granted["lease_id"], threading.Event()

    def renew() -> None:
        with get_client(sync_client=True) as renewer:
            while not stop.wait(renew_s or lease_s / 3):
                try:
                    renewer.renew_concurrency_lease(lease_id, lease_duration=lease_s)
                except Exception as e:  # the training goes on; the lease may lapse and the slot be reused
                    print(f"could not renew the {limit} slot's lease ({type(e).__name__}: {e})")

    keeper = threading.Thread(target=contextvars.copy_context().run, args=(renew,), name="nas-slot", daemon=True)
    keeper.start()
    try:
        yield True
    finally:
        stop.set()
        keeper.join()
        with get_client(sync_client=True) as client:
            client.release_concurrency_slots_with_lease(lease_id)
