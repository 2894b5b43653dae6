"""The service in this process, driven step by step on a fake clock: a real watcher, SQLite file
and pipeline, but settling, retries and rescans come due when the test moves the clock, not
after real seconds."""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest

from builders import cropped_query, product_photo
from lookalike.api.app import App
from lookalike.daemon.ingest import CLAIM_RETRY_SECONDS
from lookalike.daemon.service import STALLED_SECONDS, Service
from lookalike.search.saved import saved_paths
from running import answer_of, sha256, stored


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextmanager
def service_in_process(workspace, clock: FakeClock, **daemon) -> Iterator[Service]:
    """The workspace's service, started (index loaded, start-up backlog queued), not looping."""
    app = App(str(workspace.config))
    with app.opened_store() as store, app.node(store, "run") as node:
        service = Service(app.config.catalogue, replace(app.config.daemon, **daemon), 3, store,
                          app.pipeline, app.vector_index(), node, clock=clock)
        service.start()
        try:
            yield service
        finally:
            service.close()


def step_until(service: Service, condition: Callable[[], bool], what: str,
               clock: FakeClock | None = None, advance: float = 0.0, steps: int = 300) -> int:
    """Step the loop (moving the clock ``advance`` before each step) until ``condition``;
    returns the steps it took."""
    for taken in range(steps):
        if condition():
            return taken
        if clock is not None:
            clock.advance(advance)
        service.step()
    pytest.fail(f"{what} not reached in {steps} steps")


def test_a_file_is_taken_only_once_it_settled_on_the_clock(workspace, catalogue):
    clock = FakeClock()
    with service_in_process(workspace, clock, settle_seconds=30.0) as service:
        shutil.copy(catalogue / "item01.jpg", workspace.images / "a.jpg")
        step_until(service, lambda: len(service.settler) == 1, "the event")
        for _ in range(5):  # real time passes, the clock does not: nothing settles
            service.step()
        assert stored(workspace) == {} and len(service.settler) == 1
        clock.advance(29.0)
        service.step()
        assert stored(workspace) == {}
        clock.advance(1.0)
        step_until(service, lambda: "a.jpg" in stored(workspace), "a.jpg stored")
        assert stored(workspace)["a.jpg"][0] == "indexed"


def test_a_file_written_in_pieces_is_taken_once_whole(workspace, catalogue, caplog):
    clock = FakeClock()
    data = (catalogue / "item11.jpg").read_bytes()
    caplog.set_level(logging.INFO)
    with service_in_process(workspace, clock, settle_seconds=1.0) as service:
        with open(workspace.images / "slow.jpg", "wb") as file:
            for start in range(0, len(data), len(data) // 4 + 1):
                file.write(data[start:start + len(data) // 4 + 1])
                file.flush()
                step_until(service, lambda: len(service.settler) == 1, "the event")
                clock.advance(0.9)  # less than settle_seconds between writes
                service.step()
                assert stored(workspace) == {}
        step_until(service, lambda: "slow.jpg" in stored(workspace), "slow.jpg stored", clock,
                   advance=0.5)
    assert stored(workspace)["slow.jpg"][1] == sha256(catalogue / "item11.jpg")
    assert caplog.text.count("indexed slow.jpg") == 1


def test_an_answer_that_cannot_be_written_is_retried_when_due_and_logged_once(
        workspace, catalogue, caplog):
    clock = FakeClock()
    workspace.add_catalogue(catalogue, 4)
    (workspace.inbox / "q.jpg.neighbours.json").mkdir()  # the answer cannot be renamed there
    cropped_query(product_photo(2)).save(workspace.inbox / "q.jpg")
    caplog.set_level(logging.INFO)
    with service_in_process(workspace, clock, settle_seconds=0.5, retry_seconds=60.0) as service:
        step_until(service, lambda: "cannot write answer" in caplog.text, "the failed answer",
                   clock, advance=0.5)
        assert len(stored(workspace)) == 4
        for _ in range(3):  # due every 60 s on the clock, settled, failing: logged once
            clock.advance(60.0)
            service.step()
            clock.advance(0.5)
            service.step()
        assert caplog.text.count("cannot write answer") == 1
        (workspace.inbox / "q.jpg.neighbours.json").rmdir()
        clock.advance(30.0)
        service.step()
        service.step()
        assert answer_of(workspace, "q.jpg") is None  # the next retry is not due yet
        clock.advance(30.0)
        step_until(service, lambda: answer_of(workspace, "q.jpg"), "the retried answer",
                   clock, advance=0.5)
    assert answer_of(workspace, "q.jpg")["neighbours"][0]["path"] == "item02.jpg"
    assert "answer for q.jpg written again" in caplog.text


def test_the_periodic_rescan_comes_due_on_the_clock(workspace, catalogue, caplog):
    clock = FakeClock()
    caplog.set_level(logging.INFO)
    with service_in_process(workspace, clock, settle_seconds=0.5,
                            rescan_seconds=600.0) as service:
        shutil.copy(catalogue / "item02.jpg", workspace.images / "b.jpg")
        step_until(service, lambda: "b.jpg" in stored(workspace), "b.jpg", clock, advance=0.5)
        # Leave the store as a lost event would: the file is there, the row is not.
        with sqlite3.connect(workspace.root / "lookalike.db", timeout=30) as connection:
            connection.execute("DELETE FROM images WHERE path = 'b.jpg'")
        for _ in range(5):
            service.step()
        assert "b.jpg" not in stored(workspace)
        clock.advance(600.0)
        step_until(service, lambda: "b.jpg" in stored(workspace), "the rescan", clock,
                   advance=0.5)
    assert "rescan (periodic): 1 file(s) changed" in caplog.text


def test_work_another_node_holds_is_tried_again_when_its_claim_retry_is_due(
        workspace, catalogue):
    clock = FakeClock()
    with service_in_process(workspace, clock, settle_seconds=0.5) as service:
        held = service.node.claims.take(["file:a.jpg"])
        # Another node's claim: taken over by a second node id on the same store.
        service.node.claims.release(held)
        from lookalike.store.claims import Claims

        other = Claims(service.store, "another-node", lease=3600.0)
        assert other.take(["file:a.jpg"]) == {"file:a.jpg"}
        shutil.copy(catalogue / "item03.jpg", workspace.images / "a.jpg")
        step_until(service, lambda: len(service.retries) == 1, "a.jpg left to the other node",
                   clock, advance=0.5)
        assert "a.jpg" not in stored(workspace)
        other.release(["file:a.jpg"])
        service.step()
        assert "a.jpg" not in stored(workspace)  # its retry is not due yet
        clock.advance(CLAIM_RETRY_SECONDS)
        step_until(service, lambda: "a.jpg" in stored(workspace), "a.jpg after the retry",
                   clock, advance=0.5)


def test_status_is_published_at_most_once_a_second_on_the_clock(workspace):
    clock = FakeClock()
    reports = []
    with service_in_process(workspace, clock) as service:
        service.node.report = lambda *status: reports.append(status)
        (workspace.images / "bad.jpg").write_bytes(b"nope")
        started = time.monotonic()
        while not any(problem and "bad.jpg" in problem for _, _, problem in reports):
            assert time.monotonic() - started < 60, "the problem was never published"
            clock.advance(0.25)
            service.step()
        published = len(reports)
        for _ in range(3):  # 0.75 s on the clock: too soon to publish again
            clock.advance(0.25)
            service.step()
        assert len(reports) == published


def test_an_unwritable_snapshot_is_retried_and_logged_once(workspace, catalogue, caplog,
                                                           monkeypatch):
    import lookalike.daemon.snapshots as snapshots

    attempts = []
    publish = snapshots.publish_snapshot

    def counted(*args):
        attempts.append(args)
        return publish(*args)

    monkeypatch.setattr(snapshots, "publish_snapshot", counted)
    blocked = workspace.root / "out"
    blocked.write_text("a file where the snapshot's folder should be")
    workspace.write_config(snapshot="out/feature_vectors.pkl")
    workspace.add_catalogue(catalogue, 2)
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    # The writer is a thread that waits retry_seconds of real time between tries.
    with service_in_process(workspace, clock, settle_seconds=0.5, retry_seconds=0.05) as service:
        step_until(service, lambda: len(stored(workspace)) == 2, "the catalogue", clock,
                   advance=0.5)
        deadline = time.monotonic() + 30
        while len(attempts) < 4:
            assert time.monotonic() < deadline, "the snapshot was not tried again"
            time.sleep(0.05)
        assert caplog.text.count("cannot write snapshot") == 1
        blocked.unlink()
        blocked.mkdir()
        while not (blocked / "feature_vectors.pkl").exists():
            assert time.monotonic() < deadline, "the snapshot was never written"
            time.sleep(0.05)
    assert f"snapshot {blocked / 'feature_vectors.pkl'} written again" in caplog.text


def test_a_start_that_changed_nothing_leaves_the_snapshot_as_it_is(workspace, catalogue,
                                                                    monkeypatch):
    import lookalike.daemon.snapshots as snapshots

    publish, published = snapshots.publish_snapshot, []
    monkeypatch.setattr(snapshots, "publish_snapshot",
                        lambda *args: published.append(args) or publish(*args))
    clock = FakeClock()

    def run_for_a_while(service: Service, images: int) -> None:
        """Step (a minute of fake time, 50 ms of real time each) until ``images`` are stored,
        and a second more: time for the snapshot thread to write what was asked of it."""
        step_until(service, lambda: len(stored(workspace)) == images, "the catalogue", clock,
                   advance=0.5)
        for _ in range(20):
            clock.advance(60)
            service.step()
            time.sleep(0.05)

    workspace.add_catalogue(catalogue, 2)
    with service_in_process(workspace, clock, settle_seconds=0.5) as service:
        run_for_a_while(service, 2)
    assert len(published) == 1
    written = (workspace.root / "feature_vectors.npy").stat().st_mtime_ns
    with service_in_process(workspace, clock, settle_seconds=0.5) as service:
        run_for_a_while(service, 2)
    assert len(published) == 1
    assert (workspace.root / "feature_vectors.npy").stat().st_mtime_ns == written
    workspace.add_catalogue(catalogue, 3)  # a change while nothing watched: written again
    with service_in_process(workspace, clock, settle_seconds=0.5) as service:
        run_for_a_while(service, 3)
    assert len(published) == 2


def test_a_start_that_fails_halfway_leaves_no_thread_running(workspace, monkeypatch):
    import lookalike.daemon.service as service_module

    def unreadable_index(*args):
        raise RuntimeError("the index cannot be loaded")

    monkeypatch.setattr(service_module, "FollowedIndex", unreadable_index)
    app = App(str(workspace.config))
    with app.opened_store() as store, app.node(store, "run") as node:
        service = Service(app.config.catalogue, app.config.daemon, 3, store, app.pipeline,
                          app.vector_index(), node)
        with pytest.raises(RuntimeError, match="cannot be loaded"):
            service.run()  # the watcher and the snapshot writer had started: both stopped


def test_health_says_when_the_loop_stops_turning(workspace):
    """What /healthz answers: well while the loop turns, the reason once it has not for
    STALLED_SECONDS."""
    clock = FakeClock()
    with service_in_process(workspace, clock) as service:
        assert service.stalled() is None
        clock.advance(STALLED_SECONDS + 1)
        assert service.stalled() == (
            f"the service loop has not turned for {STALLED_SECONDS + 1:.0f} s")
        service.step()
        assert service.stalled() is None


def test_a_graph_built_at_start_is_saved_with_the_first_snapshot(workspace, catalogue):
    """Not 10 minutes later: a crash meanwhile would cost the build again (19 minutes at a
    million images). The clock stays where it is."""
    workspace.write_config(pipeline={"index": "hnsw"})
    workspace.add_catalogue(catalogue, 4)
    description = saved_paths(workspace.root / "feature_vectors.pkl", "hnsw")[1]
    with service_in_process(workspace, FakeClock(), settle_seconds=0) as service:
        step_until(service, lambda: len(stored(workspace)) == 4, "the catalogue")
        step_until(service, description.exists, "the saved graph", steps=100)
        saved = json.loads(description.read_text())["paths"]
        assert sorted(saved) == sorted(stored(workspace))
