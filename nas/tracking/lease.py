"""One runner per search: a lease on the search's MLflow parent run.

A lease is a write-once param ``lease.NNNN = <claim time> <holder>`` on the parent run (so of two
runners claiming at once exactly one wins, as with event claims) with a heartbeat tag
``nas.lease.heartbeat = NNNN <time>`` that the holder renews. The next lease may be claimed once the
last one was released (tag ``nas.lease.released``) or is older than the TTL (claim or last heartbeat:
its holder died), or at once when the holder is a process of this host that is gone.
"""

from __future__ import annotations

import time
from typing import Any

from nas.ledger.ports import Lease, LeaseHeld, holder_is_dead
from nas.tracking.runs import LEASE, SearchRuns


def leases(parent: Any) -> dict[int, tuple[str, float]]:
    """The leases claimed on a parent run: number -> (holder, claim time)."""
    out = {}
    for key, value in parent.data.params.items():
        if m := LEASE.match(key):
            at, _, holder = value.partition(" ")
            out[int(m.group(1))] = (holder, float(at))
    return out


def _last_sign_of_life(parent: Any, number: int, claimed_at: float) -> float:
    """When the holder of lease ``number`` was last known alive: its claim, or a later heartbeat of that lease."""
    beat_number, _, at = parent.data.tags.get("nas.lease.heartbeat", "").partition(" ")
    return max(claimed_at, float(at)) if beat_number == str(number) and at else claimed_at


class MlflowLease(Lease):
    """The lease of one search; holds the number it claimed, to renew and release it."""

    def __init__(self, runs: SearchRuns) -> None:
        self.runs = runs
        self.number: int | None = None

    def _parent(self) -> Any:
        parent = self.runs.parent()
        if parent is None:
            raise ValueError(f"search {self.runs.search_id!r} has no parent run to lease; start it first")
        return parent

    def acquire(self, holder: str, ttl_s: float) -> str | None:
        from mlflow.exceptions import MlflowException

        parent = self._parent()
        claimed = leases(parent)
        number = max(claimed, default=0)
        previous = None
        released = parent.data.tags.get("nas.lease.released") == str(number)
        if number and claimed[number][0] != holder and not released:
            previous = claimed[number][0]
            age = time.time() - _last_sign_of_life(parent, number, claimed[number][1])
            if age <= ttl_s and not holder_is_dead(previous):
                raise LeaseHeld(
                    f"search {self.runs.search_id!r} is already being run by {previous} (heartbeat {age:.0f} s ago); "
                    f"wait for it to finish, or if it died, run again in {ttl_s - age:.0f} s when its lease expires"
                )
        if not number or claimed[number][0] != holder or released:
            number += 1
            try:
                self.runs.client.log_param(parent.info.run_id, f"lease.{number:04d}", f"{time.time():.3f} {holder}")
            except MlflowException as e:
                raise LeaseHeld(
                    f"search {self.runs.search_id!r} was claimed by another runner at the same moment; "
                    "it runs the search, this one stops"
                ) from e
        self.number = number
        self.runs.client.set_tag(parent.info.run_id, "nas.lease.heartbeat", f"{number} {time.time():.3f}")
        return previous

    def renew(self) -> None:
        parent = self._parent()
        later = [holder for n, (holder, _) in sorted(leases(parent).items()) if self.number and n > self.number]
        if later:
            raise LeaseHeld(
                f"search {self.runs.search_id!r} was taken over by {later[-1]} after this runner's lease expired; "
                "this one stops"
            )
        self.runs.client.set_tag(parent.info.run_id, "nas.lease.heartbeat", f"{self.number} {time.time():.3f}")

    def release(self) -> None:
        if self.number is not None and self.runs.parent_id is not None:
            self.runs.client.set_tag(self.runs.parent_id, "nas.lease.released", str(self.number))
