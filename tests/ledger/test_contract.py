"""One contract, two event logs: in memory and on MLflow."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from nas.event_log import ChainError, ConcurrencyError, EventLog
from nas.event_log.memory import MemoryEventLog
from nas.event_log.mlflow import MlflowEventLog
from nas.events import ArchitectureProposed, SearchStarted, TrainingCompleted, TrainingStarted


def started(search_id: str, seq: int = 1) -> SearchStarted:
    return SearchStarted(search_id, seq, search_id, {"search": {"max_models": 3}}, "fp", "test", 0, "{}")


def proposed(search_id: str, seq: int, model: str = "m1") -> ArchitectureProposed:
    return ArchitectureProposed(search_id, seq, model, None, [], "a" * 64, "{}", "random")


class LogContract:
    """Every EventLog must pass these; subclasses say how to make one."""

    def make(self, search_id: str) -> EventLog:
        raise NotImplementedError

    def test_round_trip(self) -> None:
        log = self.make("s1")
        events = [started("s1"), proposed("s1", 2), TrainingStarted("s1", 3, "m1")]
        log.append(events[:1], 0)
        log.append(events[1:], 1)
        assert log.read() == events
        assert log.read(after_seq=2) == events[2:]

    def test_an_empty_log_reads_empty(self) -> None:
        assert self.make("nothing").read() == []

    def test_stale_expected_seq_is_refused_and_writes_nothing(self) -> None:
        log = self.make("s2")
        log.append([started("s2")], 0)
        log.append([proposed("s2", 2, "m1")], 1)
        with pytest.raises(ConcurrencyError, match="another writer"):
            log.append([proposed("s2", 2, "other")], 1)
        assert [e.seq for e in log.read()] == [1, 2]
        assert log.read()[1].model_id == "m1"

    def test_retrying_the_same_append_is_a_no_op(self) -> None:
        log = self.make("s3")
        log.append([started("s3")], 0)
        batch = [proposed("s3", 2), TrainingStarted("s3", 3, "m1")]
        log.append(batch, 1)
        log.append(batch, 1)  # the reply was lost; the writer retries
        assert [e.seq for e in log.read()] == [1, 2, 3]

    def test_misnumbered_or_foreign_events_are_refused(self) -> None:
        log = self.make("s4")
        with pytest.raises(ValueError, match="does not follow expected seq 0"):
            log.append([started("s4", seq=2)], 0)
        with pytest.raises(ValueError, match="appended to the log of 's4'"):
            log.append([started("other")], 0)
        assert log.read() == []

    def test_attachments_travel_with_their_event(self, tmp_path: Path) -> None:
        log = self.make("s5")
        weights = tmp_path / "w.bin"
        weights.write_bytes(b"\x00\x01weights")
        log.append([started("s5")], 0)
        done = TrainingCompleted("s5", 2, "m1", "a" * 64, 0.9, 10, [{"loss": 1.0, "val_accuracy": 0.9}])
        log.append([done], 1, attachments={2: {"weights.npz": weights}})
        assert log.attachment(2, "weights.npz").read_bytes() == b"\x00\x01weights"
        with pytest.raises(FileNotFoundError, match="no attachment"):
            log.attachment(2, "nope.npz")

    def test_two_writers_one_winner_per_seq(self) -> None:
        setup = self.make("race")
        setup.append([started("race")], 0)
        wins: list[str] = []
        losses: list[str] = []
        barrier = threading.Barrier(2)

        def writer(name: str) -> None:
            log = self.make("race")
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


class TestMemoryLog(LogContract):
    def make(self, search_id: str) -> EventLog:
        if not hasattr(self, "_logs"):
            self._logs: dict[str, MemoryEventLog] = {}
        return self._logs.setdefault(search_id, MemoryEventLog(search_id))

    def test_edited_record_breaks_the_chain(self) -> None:
        log = self.make("t")
        log.append([started("t"), proposed("t", 2)], 0)
        assert isinstance(log, MemoryEventLog)
        log.records[1]["payload"]["strategy"] = "bayesian"
        with pytest.raises(ChainError, match="seq 2: hash does not match"):
            log.read()


@pytest.mark.usefixtures("mlflow_uri")
class TestMlflowLog(LogContract):
    def make(self, search_id: str) -> EventLog:
        return MlflowEventLog(search_id)

    def test_one_run_per_event_under_one_parent(self) -> None:
        log = MlflowEventLog("ui")
        log.append([started("ui"), proposed("ui", 2)], 0)
        done = TrainingCompleted("ui", 3, "m1", "a" * 64, 0.973, 10, [{"loss": 1.0, "val_accuracy": 0.97}])
        log.append([done], 2)
        parent = log.parent_run()
        runs = {int(r.data.tags["nas.seq"]): r for r in log.event_runs()}
        assert sorted(runs) == [1, 2, 3]
        assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in runs.values())
        assert all(r.info.status == "FINISHED" for r in runs.values())
        assert runs[3].info.run_name == "0003 trained m1 val_acc=0.973"
        assert runs[2].data.params["strategy"] == "random"
        assert runs[1].data.params["config.search.max_models"] == "3"
        history = log.client.get_metric_history(runs[3].info.run_id, "val_accuracy")
        assert [m.value for m in history] == [0.97]

    def test_bad_search_names_are_refused(self) -> None:
        with pytest.raises(ValueError, match='search name "it\'s" is not allowed'):
            MlflowEventLog("it's")
