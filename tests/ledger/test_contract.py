"""One contract, two stores: every port (event log, lease, report sink, listing) in memory and on MLflow."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from nas.ledger.events import ArchitectureProposed, SearchStarted, TrainingCompleted, TrainingStarted
from nas.ledger.log import ChainError, ConcurrencyError, Head
from nas.ledger.memory import MemoryStore
from nas.ledger.ports import LeaseHeld, SearchStore, holder_name, process_space
from nas.tracking import open_store
from nas.tracking.runs import searches_path


def started(search_id: str, seq: int = 1) -> SearchStarted:
    return SearchStarted(search_id, seq, search_id, {"search": {"max_models": 3}}, "fp", "test", 0, "{}")


def proposed(search_id: str, seq: int, model: str = "m1") -> ArchitectureProposed:
    return ArchitectureProposed(search_id, seq, model, None, [], "a" * 64, "{}", "random")


class StoreContract:
    """Every SearchStore must pass these; subclasses say how to make one (the same store for each call)."""

    def store(self) -> SearchStore:
        raise NotImplementedError

    def test_round_trip(self) -> None:
        log = self.store().log("s1")
        events = [started("s1"), proposed("s1", 2), TrainingStarted("s1", 3, "m1")]
        log.append(events[:1], 0)
        log.append(events[1:], 1)
        assert log.read() == events
        assert log.read(after_seq=2) == events[2:]
        assert self.store().log("s1").read() == events  # a fresh reader sees the same
        head = log.head()
        assert head.seq == 3 and head == Head.parse(str(head)) and head.hash == log.records()[-1]["hash"]

    def test_an_empty_log_reads_empty_and_the_search_does_not_exist(self) -> None:
        assert self.store().log("nothing").read() == []
        assert not self.store().exists("nothing-at-all")

    def test_stale_expected_seq_is_refused_and_writes_nothing(self) -> None:
        log = self.store().log("s2")
        log.append([started("s2")], 0)
        log.append([proposed("s2", 2, "m1")], 1)
        with pytest.raises(ConcurrencyError, match="another writer"):
            log.append([proposed("s2", 2, "other")], 1)
        assert [e.seq for e in log.read()] == [1, 2]
        assert log.read()[1].model_id == "m1"

    def test_retrying_the_same_append_is_a_no_op(self) -> None:
        log = self.store().log("s3")
        log.append([started("s3")], 0)
        batch = [proposed("s3", 2), TrainingStarted("s3", 3, "m1")]
        log.append(batch, 1)
        log.append(batch, 1)  # the reply was lost; the writer retries
        assert [e.seq for e in log.read()] == [1, 2, 3]

    def test_misnumbered_or_foreign_events_are_refused(self) -> None:
        log = self.store().log("s4")
        with pytest.raises(ValueError, match="does not follow expected seq 0"):
            log.append([started("s4", seq=2)], 0)
        with pytest.raises(ValueError, match="appended to the log of 's4'"):
            log.append([started("other")], 0)
        assert log.read() == []

    def test_attachments_travel_with_their_event(self, tmp_path: Path) -> None:
        log = self.store().log("s5")
        weights = tmp_path / "w.bin"
        weights.write_bytes(b"\x00\x01weights")
        log.append([started("s5")], 0)
        done = TrainingCompleted("s5", 2, "m1", "a" * 64, 0.9, 10, [{"loss": 1.0, "val_accuracy": 0.9}])
        log.append([done], 1, attachments={2: {"weights.npz": weights}})
        assert log.attachment(2, "weights.npz").read_bytes() == b"\x00\x01weights"
        with pytest.raises(FileNotFoundError, match="no attachment"):
            log.attachment(2, "nope.npz")

    def test_two_writers_one_winner_per_seq(self) -> None:
        setup = self.store().log("race")
        setup.append([started("race")], 0)
        wins: list[str] = []
        losses: list[str] = []
        barrier = threading.Barrier(2)

        def writer(name: str) -> None:
            log = self.store().log("race")
            seq = 1
            for _ in range(3):
                barrier.wait()
                try:
                    log.append([proposed("race", seq + 1, f"{name}{seq}")], seq)
                    wins.append(name)
                except ConcurrencyError:
                    losses.append(name)
                seq = len(log.read())

        threads = [threading.Thread(target=writer, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        events = setup.read()
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert len(events) == 1 + len(wins)
        assert len(wins) == 3 and len(losses) == 3  # each round: exactly one winner

    def test_a_keyed_writer_seals_records_and_a_reader_checks_them(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("NAS_LEDGER_KEY", "k1")
        name = f"sealed-{uuid.uuid4().hex[:6]}"
        log = self.store().log(name)
        log.append([started(name), proposed(name, 2)], 0)
        assert all("mac" in r for r in log.records())
        assert not any("seal" in p for _, p in self.store().audit(name, deep=False).findings)
        monkeypatch.setenv("NAS_LEDGER_KEY", "another key")
        report = self.store().audit(name, deep=False)
        assert any("seal" in p and "forged" in p for _, p in report.findings)

    # --- lease ----------------------------------------------------------------------------------------

    def leased(self) -> tuple[SearchStore, str]:
        name = f"leased-{uuid.uuid4().hex[:8]}"
        store = self.store()
        store.create(name)
        store.log(name).append([started(name)], 0)
        return store, name

    def test_a_held_lease_refuses_a_second_runner_naming_the_holder(self) -> None:
        store, name = self.leased()
        a = store.lease(name)
        assert a.acquire("runner A", ttl_s=60) is None
        with pytest.raises(LeaseHeld, match=r"already being run by runner A \(heartbeat \d+ s ago\).*lease expires"):
            store.lease(name).acquire("runner B", ttl_s=60)
        assert store.lease(name).acquire("runner A", ttl_s=60) is None  # the holder itself (a retry) keeps it

    def test_a_released_lease_passes_on_without_waiting(self) -> None:
        store, name = self.leased()
        a = store.lease(name)
        a.acquire("runner A", ttl_s=60)
        a.release()
        assert store.lease(name).acquire("runner B", ttl_s=60) is None

    def test_an_expired_lease_is_taken_over_and_its_holder_learns_it_lost(self) -> None:
        store, name = self.leased()
        a = store.lease(name)
        a.acquire("runner A", ttl_s=60)
        time.sleep(1.2)
        b = store.lease(name)
        assert b.acquire("runner B", ttl_s=1) == "runner A"  # A's heartbeat is older than 1 s
        with pytest.raises(LeaseHeld, match="taken over by runner B"):
            a.renew()
        b.renew()

    def test_a_lease_whose_holder_process_is_gone_is_free_at_once(self) -> None:
        import socket
        import subprocess
        import sys

        store, name = self.leased()
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        dead = f"runner A [{socket.gethostname()}:{gone.stdout.strip()}:{process_space()}]"  # exited, of this host
        store.lease(name).acquire(dead, ttl_s=600)
        assert store.lease(name).acquire("runner B", ttl_s=600) == dead

    def test_a_lease_whose_holder_was_killed_and_not_yet_reaped_is_free_at_once(self) -> None:
        """A runner killed under a parent that has not yet waited for it (a flow run's process under its worker) is
        a zombie, which still answers ``kill(pid, 0)``: it holds nothing. Found by the stack's resume drill."""
        import signal
        import socket
        import subprocess
        import sys

        store, name = self.leased()
        runner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        try:
            holder = f"runner A [{socket.gethostname()}:{runner.pid}:{process_space()}]"
            store.lease(name).acquire(holder, ttl_s=600)
            with pytest.raises(LeaseHeld, match="runner A"):  # alive: held
                store.lease(name).acquire("runner B", ttl_s=600)
            runner.send_signal(signal.SIGKILL)
            deadline = time.monotonic() + 10
            while Path(f"/proc/{runner.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
                assert time.monotonic() < deadline, "the killed process never became a zombie"
                time.sleep(0.01)
            assert store.lease(name).acquire("runner B", ttl_s=600) == holder  # killed, not yet reaped: free
        finally:
            runner.kill()
            runner.wait()

    def test_a_gone_pid_of_a_machine_named_alike_or_of_an_older_version_holds_its_lease_until_it_expires(self) -> None:
        """Two containers often share a hostname: a pid that is gone here says nothing of a process there."""
        import socket
        import subprocess
        import sys

        store, name = self.leased()
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        pid = gone.stdout.strip()
        for holder in (
            f"runner A [{socket.gethostname()}:{pid}:0123456789ab]",
            f"runner A [{socket.gethostname()}:{pid}]",
        ):
            lease = store.lease(name)
            lease.acquire(holder, ttl_s=600)
            with pytest.raises(LeaseHeld, match="runner A"):
                store.lease(name).acquire("runner B", ttl_s=600)
            lease.release()

    # --- report sink and listing ---------------------------------------------------------------------

    def test_the_summary_lists_a_search_without_its_events_and_marks_broken_ones(self) -> None:
        store, name = self.leased()
        sink = store.reports(name)
        values = {"status": "unfinished", "strategy": "random", "trained": "2", "failed": "2", "not_trained": "1"}
        sink.summary({**values, "best_val_accuracy": "0.5", "events": "1"}, {"best_val_accuracy": {1: 0.4, 2: 0.5}})
        sink.summary({**values, "best_val_accuracy": "0.5", "events": "1"}, {"best_val_accuracy": {1: 0.4, 2: 0.5}})
        store.create(f"{name}-empty")
        listed = {s.name: s for s in store.searches()}
        assert listed[name].trained == 2 and listed[name].best_val_accuracy == 0.5 and listed[name].problem is None
        assert (listed[name].failed, listed[name].not_trained) == (1, 1)  # a model without time is no failed training
        assert "no SearchStarted" in (listed[f"{name}-empty"].problem or "")


class TestMemoryStore(StoreContract):
    def store(self) -> SearchStore:
        if not hasattr(self, "_store"):
            self._store = MemoryStore()
        return self._store

    def test_edited_record_breaks_the_chain(self) -> None:
        log = self.store().log("t")
        log.append([started("t"), proposed("t", 2)], 0)
        log.sealed[1]["payload"]["strategy"] = "bayesian"  # type: ignore[attr-defined]
        with pytest.raises(ChainError, match="seq 2: hash does not match"):
            log.read()


@pytest.mark.usefixtures("mlflow_uri")
class TestMlflowStore(StoreContract):
    def store(self) -> SearchStore:
        return open_store()

    def test_one_run_per_event_under_one_parent(self) -> None:
        store = open_store()
        log = store.log("ui")
        log.append([started("ui"), proposed("ui", 2)], 0)
        done = TrainingCompleted("ui", 3, "m1", "a" * 64, 0.973, 10, [{"loss": 1.0, "val_accuracy": 0.97}])
        log.append([done], 2)
        runs = store.runs("ui")  # type: ignore[attr-defined]
        by_seq = {int(r.data.tags["nas.seq"]): r for r in runs.event_runs()}
        assert sorted(by_seq) == [1, 2, 3]
        assert all(r.data.tags["mlflow.parentRunId"] == runs.parent_id for r in by_seq.values())
        assert all(r.info.status == "FINISHED" for r in by_seq.values())
        assert by_seq[3].info.run_name == "0003 trained m1 val_acc=0.973"
        assert by_seq[2].data.params["strategy"] == "random"
        assert by_seq[1].data.params["config.search.max_models"] == "3"
        history = store.client.get_metric_history(by_seq[3].info.run_id, "val_accuracy")  # type: ignore[attr-defined]
        assert [m.value for m in history] == [0.97]
        exp = store.client.get_experiment_by_name("nas")  # type: ignore[attr-defined]
        assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
        assert f"({searches_path(exp.experiment_id)})" in exp.tags["mlflow.note.content"]  # a markdown link

    def test_bad_search_names_are_refused(self) -> None:
        with pytest.raises(ValueError, match='search name "it\'s" is not allowed'):
            open_store().log("it's")

    def test_of_runners_claiming_at_once_exactly_one_wins(self) -> None:
        store, name = self.leased()
        barrier = threading.Barrier(4)
        outcomes: dict[str, str] = {}

        def claim(holder: str) -> None:
            lease = store.lease(name)
            barrier.wait()
            try:
                lease.acquire(holder, ttl_s=60)
                outcomes[holder] = "won"
            except LeaseHeld as e:
                outcomes[holder] = str(e)

        threads = [threading.Thread(target=claim, args=(f"runner {i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes.values()).count("won") == 1, outcomes
        params = store.runs(name).parent().data.params  # type: ignore[attr-defined]
        assert [k for k in params if k.startswith("lease.")] == ["lease.0001"]

    def test_a_search_without_a_parent_run_cannot_be_leased(self) -> None:
        with pytest.raises(ValueError, match="no parent run"):
            open_store().lease("nothing-yet").acquire("runner A", ttl_s=60)


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs root and unshare(1)")
def test_a_container_named_alike_does_not_take_a_live_holder_for_dead() -> None:
    """A process in another PID namespace with this host's name (a container of the same image) does not find our
    pid among its own; before, it judged our live holder dead and freed its lease."""
    holder = holder_name("runner A")  # this process: alive
    check = f"from nas.ledger.ports import holder_is_dead; print(holder_is_dead({holder!r}))"
    inside = subprocess.run(
        ["unshare", "--uts", "--pid", "--fork", "--mount-proc", sys.executable, "-c", check],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert inside.stdout.strip() == "False"
    assert f"[{socket.gethostname()}:{os.getpid()}:" in holder
