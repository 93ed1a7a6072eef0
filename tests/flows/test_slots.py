"""The training slot: one slot of a global concurrency limit on a real Prefect API, held and given back."""

from __future__ import annotations

import itertools
import threading
import time

import pytest


def _active(limit: str) -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(limit).active_slots


@pytest.mark.usefixtures("prefect_api")
def test_a_slot_is_held_by_one_block_at_a_time_renewed_and_given_back(capsys: pytest.CaptureFixture[str]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    from flows.slots import training_slot

    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="slot-test", limit=1))
    spans: list[tuple[float, float, int]] = []

    def hold() -> None:
        with training_slot(60, limit="slot-test", renew_s=0.2):
            start = time.monotonic()
            seen = _active("slot-test")
            time.sleep(1.0)  # long enough for a few renewals
            spans.append((start, time.monotonic(), seen))

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spans.sort()
    assert len(spans) == 3 and all(seen == 1 for _, _, seen in spans)  # the server counted the held slot
    assert all(a_end <= b_start for (_, a_end, _), (b_start, _, _) in itertools.pairwise(spans))
    assert _active("slot-test") == 0  # given back
    assert "could not renew" not in capsys.readouterr().out  # every renewal was accepted


@pytest.mark.usefixtures("prefect_api")
def test_a_limit_that_does_not_exist_limits_nothing() -> None:
    from flows.slots import training_slot

    ran = []
    with training_slot(60, limit="no-such-limit"):
        ran.append(True)
    assert ran == [True]


@pytest.mark.usefixtures("prefect_api")
def test_a_slot_is_given_back_when_the_block_fails() -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    from flows.slots import training_slot

    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="slot-fail", limit=1))
    with pytest.raises(RuntimeError, match="training broke"), training_slot(60, limit="slot-fail"):
        raise RuntimeError("training broke")
    assert _active("slot-fail") == 0
