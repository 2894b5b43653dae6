"""Several nodes on one catalogue: real `lookalike run` processes sharing a real PostgreSQL 15
(one server for the module, a database per test) and one images folder. Each image is
embedded once, whichever node takes it; a node killed with -9 loses its claims when their
lease runs out; a server restart is waited out; every node answers from the whole catalogue.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import threading
import time
import tomllib
from collections import Counter

import pytest
from conftest import Workspace
from PIL import ImageDraw
from sqlalchemy import text, update

from builders import cropped_query, product_photo
from lookalike.api.app import App
from lookalike.base.errors import LookalikeError
from lookalike.daemon.ingest import Batch, ingest, preparing_pool
from lookalike.store.leader import SnapshotLeader
from lookalike.store.nodes import ThisNode, joined
from lookalike.store.snapshot import read_snapshot
from lookalike.store.store import Store
from lookalike.store.tables import Claim, Node
from running import RunningService, lookalike


@pytest.fixture
def shared(workspace, database) -> Workspace:
    """The workspace as the shared catalogue: its images, inbox and snapshot on PostgreSQL."""
    workspace.write_config(database=database)
    return workspace


def node_workspace(shared: Workspace, name: str, **overrides) -> Workspace:
    """A node's own folder and config.toml, on the shared images, inbox, snapshot and
    database unless ``overrides`` says otherwise."""
    node = Workspace(shared.root / name, shared.model_home)
    node.root.mkdir()
    settings = {"database": tomllib.loads(shared.config.read_text())["database"],
                "images_dir": str(shared.images), "inbox_dir": str(shared.inbox),
                "snapshot": str(shared.root / "feature_vectors.pkl")}
    node.write_config(**{**settings, **overrides})
    return node


@pytest.fixture
def start_nodes(service_factory):
    """``start_nodes(workspace, ...)``: ``lookalike run`` on each workspace, all started at
    once, returned when all watch (and gone after the test, as every service is)."""
    def start(*workspaces: Workspace) -> list[RunningService]:
        nodes = [service_factory(on=ws, wait=False) for ws in workspaces]
        for node in nodes:
            node.wait_for(lambda n=node: "watching" in n.log(), "the node to start")
        return nodes

    return start


def embedded(log: str) -> list[str]:
    """The paths a node's log says it embedded (not those that reused a stored vector)."""
    return re.findall(r" indexed (\S+)$", log, re.MULTILINE)


def rows(database: str) -> dict[str, tuple[str, str]]:
    """path -> (status, sha256) as the store holds it."""
    store = Store(database)
    try:
        with store.session() as session:
            return {path: (status, sha) for path, status, sha in session.execute(
                text("SELECT path, status, sha256 FROM images"))}
    finally:
        store.close()


def embeds_per_content(database: str, *services: RunningService) -> Counter:
    """How many times the nodes embedded each content the store holds."""
    stored = rows(database)
    return Counter(stored[path][1] for service in services for path in embedded(service.log()))


def add_photos(folder, count: int, start: int = 0) -> list[str]:
    """``count`` product photos as small JPEG files, each distinct (a patch coloured after its
    number on the garment); their names."""
    names = []
    for seed in range(start, start + count):
        photo = product_photo(seed).resize((96, 128))
        ImageDraw.Draw(photo).rectangle([44, 60, 52, 68], fill=(seed % 256, seed // 256 * 60, 90))
        name = f"p{seed:04d}.jpg"
        photo.save(folder / name, quality=90)
        names.append(name)
    return names


def expiry(store: Store, key: str) -> float:
    with store.session() as session:
        return session.get(Claim, key).expires


def test_a_claim_is_held_while_its_node_lives_and_taken_over_once_released(database):
    store = Store(database)
    try:
        with joined(store, "run", "m", lease_seconds=1.0) as first, \
                joined(store, "run", "m", lease_seconds=1.0) as second:
            assert first.claims.take(["file:a", "file:b"]) == {"file:a", "file:b"}
            assert second.claims.take(["file:b", "file:c"]) == {"file:c"}
            claimed_until = expiry(store, "file:a")
            deadline = time.monotonic() + 10
            while expiry(store, "file:a") <= claimed_until:  # first's heartbeat renews it
                assert time.monotonic() < deadline, "the claim was never renewed"
                time.sleep(0.05)
            assert second.claims.take(["file:a", "file:b"]) == set()
            assert first.claims.take(["file:a"]) == {"file:a"}  # its own, again
            first.claims.release(["file:a"])
            assert second.claims.take(["file:a"]) == {"file:a"}
            assert [node.live for node in store.nodes()] == [True, True]
            first.leave()  # signs off: its claims and row go with it
            assert second.claims.take(["file:b"]) == {"file:b"}
            assert [node.id for node in store.nodes()] == [second.id]
    finally:
        store.close()


def test_equal_bytes_on_two_nodes_are_embedded_once(shared, catalogue):
    for folder in ("a", "b"):
        (shared.images / folder).mkdir()
        shutil.copy(catalogue / "item01.jpg", shared.images / folder / "same.jpg")
    app = App(str(shared.config))
    pipeline = app.pipeline
    with app.opened_store() as store, preparing_pool() as pool, \
            joined(store, "run", pipeline.model_id) as first, \
            joined(store, "run", pipeline.model_id) as second:
        on_first = Batch(store, pipeline, shared.images, pool, first).start(["a/same.jpg"])
        on_second = Batch(store, pipeline, shared.images, pool, second).start(["b/same.jpg"])
        assert on_second.report.elsewhere == ["b/same.jpg"]  # the first prepares that content
        assert on_first.finish().embedded == 1 and on_second.finish().embedded == 0
        report = ingest(store, pipeline, shared.images, second, ["b/same.jpg"], 4)
        assert (report.embedded, report.reused) == (0, 1)
        assert store.count_indexed(pipeline.model_id) == 2


def test_a_wrong_password_or_another_pipeline_is_one_line(shared, server, start_nodes):
    wrong = node_workspace(shared, "wrong", database=server.new_database(password="guess"))
    result = lookalike(wrong, "run")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "password authentication failed" in result.stderr and "guess" not in result.stderr

    (running,) = start_nodes(node_workspace(shared, "first"))
    other = node_workspace(shared, "other", pipeline={"remover": "none"})
    result = lookalike(other, "run")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert f"(pid {running.process.pid}) embeds with another pipeline" in result.stderr
    # Killed before it signed off, a node of this machine no longer stands in the way.
    running.process.send_signal(signal.SIGKILL)
    running.kill()
    result = lookalike(other, "index")
    assert result.returncode == 0, result.stderr


def test_index_beside_a_running_node_is_one_more_node(shared, catalogue, start_nodes):
    shared.add_catalogue(catalogue, 3)
    (running,) = start_nodes(node_workspace(shared, "running"))
    running.wait_for(lambda: "snapshot written" in running.log(), "the snapshot")
    shutil.copy(catalogue / "item05.jpg", shared.images / "late.jpg")
    result = lookalike(shared, "index")  # may race the node for late.jpg: one embeds it
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(
        "index holds 4 images; the snapshot is written by a running service")
    running.wait_for(lambda: len(read_snapshot(shared.root / "feature_vectors.pkl")["paths"])
                     == 4, "the node's snapshot")
    assert running.stop() == 0


@pytest.mark.slow
def test_two_nodes_split_the_work_and_embed_each_image_once(
        shared, catalogue, start_nodes, database):
    names = add_photos(shared.images, 120)
    (shared.images / "copies").mkdir()  # equal bytes far apart in the backlog
    for name in names[::20]:
        shutil.copy(shared.images / name, shared.images / "copies" / name)
    lease = {"lease_seconds": 10.0}  # the snapshot passes to the other a lease after a kill
    first, second = start_nodes(node_workspace(shared, "first", daemon=lease),
                                node_workspace(shared, "second", daemon=lease))
    first.wait_for(lambda: len(rows(database)) == 126, "the backlog")

    # The start-up backlog was split, and every content embedded by one node only.
    assert len(embedded(first.log())) and len(embedded(second.log()))
    assert set(embeds_per_content(database, first, second).values()) == {1}
    assert len(embeds_per_content(database, first, second)) == 120

    def status() -> dict:
        return json.loads(lookalike(shared, "status", "--json").stdout)

    first.wait_for(lambda: sum(node["embedded"] for node in status()["nodes"]) == 120,
                   "the nodes to report what they embedded")
    assert sorted(node["pid"] for node in status()["nodes"] if node["live"]) == sorted(
        [first.process.pid, second.process.pid])

    # Arrivals while both watch: each embedded once; a shared inbox gets one answer a query.
    arrivals = add_photos(shared.images, 40, start=500)
    first.wait_for(lambda: len(rows(database)) == 126 + len(arrivals), "the arrivals")
    assert set(embeds_per_content(database, first, second).values()) == {1}
    assert len(embeds_per_content(database, first, second)) == 160
    for seed in range(1, 5):  # a catalogue photo itself: its own nearest neighbour
        shutil.copy(shared.images / f"p{seed:04d}.jpg", shared.inbox / f"q{seed}.jpg")
    for seed in range(1, 5):
        first.wait_for(lambda s=seed: (shared.inbox / f"q{s}.jpg.neighbours.json").exists(),
                       "the answer")
        # The answer's log line follows the file's rename: wait for it too.
        first.wait_for(lambda s=seed: any(f"answered q{s}.jpg" in service.log()
                                          for service in (first, second)), "the log line")
        answers = [line for service in (first, second) for line in service.log().splitlines()
                   if f"answered q{seed}.jpg" in line]
        assert len(answers) == 1
        answer = json.loads((shared.inbox / f"q{seed}.jpg.neighbours.json").read_text())
        assert answer["neighbours"][0]["path"] == f"p{seed:04d}.jpg"
        assert answer["index_size"] == 166

    # One node writes the snapshot.
    first.wait_for(lambda: len(read_snapshot(shared.root / "feature_vectors.pkl")["paths"])
                   == 166, "the snapshot")
    (writer,) = [s for s in (first, second) if "snapshot written" in s.log()]
    (other,) = {first, second} - {writer}

    # Its writer killed, the other node takes the snapshot over.
    writer.process.send_signal(signal.SIGKILL)
    writer.kill()
    add_photos(shared.images, 1, start=900)
    other.wait_for(lambda: len(read_snapshot(shared.root / "feature_vectors.pkl")["paths"])
                   == 167, "the other node's snapshot")
    # Its log line follows the file's rename: waited for, not raced.
    other.wait_for(lambda: "snapshot written" in other.log(), "the other node's log of it")
    assert other.stop() == 0


def wait_to_embed(service: RunningService) -> None:
    """Until ``service`` embeds one more image."""
    before = len(embedded(service.log()))
    service.wait_for(lambda: len(embedded(service.log())) > before, "one more image")


KILLS = 6


@pytest.mark.slow
def test_a_node_killed_again_and_again_loses_nothing_and_doubles_nothing(shared, start_nodes,
                                                                        database):
    """Two nodes ingest 240 images, arriving in six waves, while one is killed with -9 six
    times, each time once it has embedded an image of the wave: every image ends in exactly
    one row; only work in flight at a kill is embedded again."""
    lease = {"daemon": {"settle_seconds": 0.2, "lease_seconds": 2.0}}
    steady = node_workspace(shared, "steady", **lease)
    victim = node_workspace(shared, "victim", **lease)
    survivor, killed = start_nodes(steady, victim)
    names = []
    for wave in range(KILLS):
        # The steady node is paused while a wave arrives, so the victim surely takes part of
        # it (both claim the same files in the same order: the busier node wins them all).
        survivor.process.send_signal(signal.SIGSTOP)
        try:
            names += add_photos(shared.images, 40, start=40 * wave)
            wait_to_embed(killed)
            killed.process.send_signal(signal.SIGKILL)  # with the rest of its batch in flight
            killed.kill()
        finally:
            survivor.process.send_signal(signal.SIGCONT)
        (killed,) = start_nodes(victim)  # its log file goes on
    survivor.wait_for(lambda: len(rows(database)) == 40 * KILLS, "every image", timeout=600)
    stored = rows(database)
    assert sorted(stored) == sorted(names)
    assert {status for status, _ in stored.values()} == {"indexed"}
    assert len({sha for _, sha in stored.values()}) == 40 * KILLS
    embeds = Counter(embedded(survivor.log()) + embedded(killed.log()))
    assert set(embeds) == set(names)
    again = [path for path, count in embeds.items() if count > 1]
    assert len(again) <= KILLS * 2 * 16  # at most two batches in flight at each kill

    # Every killed node is listed as gone once three leases passed; the snapshot lead
    # passed on if the killed node held it.
    def liveness() -> Counter:
        status = json.loads(lookalike(shared, "status", "--json").stdout)
        return Counter(node["live"] for node in status["nodes"])

    survivor.wait_for(lambda: liveness() == {True: 2, False: KILLS}, "the killed listed as gone",
                      timeout=30)
    survivor.wait_for(lambda: len(read_snapshot(shared.root / "feature_vectors.pkl")["paths"])
                      == 40 * KILLS, "the snapshot")
    assert survivor.stop() == 0 and killed.stop() == 0


@pytest.mark.slow
def test_a_database_restart_is_waited_out(shared, server, start_nodes, database):
    names = add_photos(shared.images, 160)
    first, second = start_nodes(node_workspace(shared, "first"), node_workspace(shared, "second"))
    first.wait_for(lambda: len(rows(database)) >= 30, "the ingest to start")
    restart = threading.Thread(target=server.restart, args=(4.0,))
    restart.start()
    arrivals = add_photos(shared.images, 20, start=700)  # while the server is down
    restart.join()
    first.wait_for(lambda: len(rows(database)) == 180, "every image", timeout=300)
    assert sorted(rows(database)) == sorted(names + arrivals)
    for service in (first, second):
        log = service.log()
        assert log.count("database unreachable") == 1, log[-3000:]
        assert "database reachable again" in log
    assert first.stop() == 0 and second.stop() == 0


@pytest.mark.slow
def test_a_node_that_sees_no_images_forgets_none_and_answers_from_the_whole_catalogue(
        shared, catalogue, start_nodes, database):
    shared.add_catalogue(catalogue, 6)
    (shared.root / "unmounted").mkdir()  # the share, as a node sees it when not mounted
    own_inbox = shared.root / "blind-inbox"
    (writer,) = start_nodes(node_workspace(shared, "writer"))
    writer.wait_for(lambda: len(rows(database)) == 6, "the catalogue")
    (blind,) = start_nodes(node_workspace(
        shared, "blind", images_dir=str(shared.root / "unmounted"), inbox_dir=str(own_inbox)))
    assert "removals held back" in blind.log()
    assert len(rows(database)) == 6

    # An image the other node embeds is found by a query to this node's own inbox.
    shutil.copy(catalogue / "item09.jpg", shared.images / "new.jpg")
    writer.wait_for(lambda: "new.jpg" in rows(database), "the new image")
    arrived = time.monotonic()
    cropped_query(product_photo(9)).save(own_inbox / "q.jpg")
    answer = own_inbox / "q.jpg.neighbours.json"
    blind.wait_for(answer.exists, "the answer")
    assert time.monotonic() - arrived < 10
    assert json.loads(answer.read_text())["neighbours"][0]["path"] == "new.jpg"
    assert "answered q.jpg" not in writer.log()
    assert len(rows(database)) == 7
    assert blind.stop() == 0 and writer.stop() == 0



def paused(node) -> None:
    """Stop ``node``'s heartbeat, as SIGSTOP would: its claims run out after a lease."""
    node._stopping.set()
    node._beating.join()


def test_a_node_paused_past_its_lease_stores_nothing_over_the_work_of_another(shared, catalogue):
    """Fencing: a batch that saw a file gone, then waited past its lease while another node
    stored the file, deletes nothing (before: the row was deleted, the file on disk)."""
    app = App(str(shared.config))
    pipeline = app.pipeline
    with app.opened_store() as store, preparing_pool() as pool, \
            joined(store, "run", pipeline.model_id, lease_seconds=0.5) as first, \
            joined(store, "run", pipeline.model_id, lease_seconds=0.5) as second:
        late = Batch(store, pipeline, shared.images, pool, first).start(["x.jpg"])
        assert late.gone == ["x.jpg"]  # not there yet
        paused(first)
        time.sleep(1.0)  # past the lease
        shutil.copy(catalogue / "item01.jpg", shared.images / "x.jpg")
        assert Batch(store, pipeline, shared.images, pool, second).start(["x.jpg"]) \
            .finish().embedded == 1
        assert late.finish().removed == 0
        assert store.count_indexed(pipeline.model_id) == 1


def join_at_once(store: Store, models: list[str]) -> dict[str, ThisNode | None]:
    """Each of ``models`` joins ``store`` from a thread of its own, all at one moment: the
    node of each, or None where it was refused."""
    start, outcomes = threading.Barrier(len(models)), {}

    def join(model):
        start.wait()
        try:
            outcomes[model] = ThisNode(store, "run", model, 60.0)
        except LookalikeError:
            outcomes[model] = None

    threads = [threading.Thread(target=join, args=(model,)) for model in models]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_nodes_with_other_pipelines_joining_at_once_are_never_both_let_in(database):
    store = Store(database)
    try:
        for trial in range(10):
            outcomes = join_at_once(store, [f"a{trial}", f"b{trial}"])
            assert list(outcomes.values()).count(None) == 1, outcomes  # before: both ran
            for node in outcomes.values():
                if node is not None:
                    node.leave()
    finally:
        store.close()


def test_a_node_of_another_pid_space_is_live_by_its_heartbeat(database):
    """Containers on one host name: a pid means nothing outside its own pid namespace."""
    store = Store(database)
    try:
        with joined(store, "run", "m") as node:
            dead = dead_pid()
            with store.session() as session:
                session.execute(update(Node).where(Node.id == node.id).values(pid=dead))
            assert [other.live for other in store.nodes()] == [False]  # here: its pid is dead
            with store.session() as session:
                session.execute(update(Node).where(Node.id == node.id)
                                .values(pid_space="another-boot/4026531836"))
            assert [other.live for other in store.nodes()] == [True]
            with pytest.raises(LookalikeError, match="embeds with another pipeline"):
                ThisNode(store, "run", "other", 60.0)
            with pytest.raises(LookalikeError, match="max_pixels=1"):
                ThisNode(store, "run", "m", 60.0, limits="max_pixels=1")
    finally:
        store.close()


def dead_pid() -> int:
    """The pid of a process that has exited."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_paused_snapshot_writer_is_replaced_like_a_dead_one(database):
    store = Store(database)
    try:
        with joined(store, "run", "m", lease_seconds=0.5) as first, \
                joined(store, "run", "m", lease_seconds=0.5) as second:
            writer, other = SnapshotLeader(first.claims), SnapshotLeader(second.claims)
            assert writer.holds() and not other.holds()
            time.sleep(1.0)
            assert writer.holds() and not other.holds()  # renewed by its heartbeat
            paused(first)
            time.sleep(1.0)
            assert other.holds() and not writer.holds()
    finally:
        store.close()


def meta_lock_holder(database: str, pid: int) -> bool:
    """True when the process ``pid`` has a transaction open that holds meta's rows (the
    write generation) for update."""
    store = Store(database)
    try:
        with store.session() as session:
            return bool(session.scalar(text(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'meta' "
                "AND l.mode = 'RowShareLock' AND a.application_name = :name"),
                {"name": f"lookalike {pid}"}))
    finally:
        store.close()


def stop_inside_a_write(service: RunningService, database: str, timeout: float = 120) -> None:
    """SIGSTOP ``service`` at a moment its write transaction holds the generation lock
    (tried again until the moment is hit)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if meta_lock_holder(database, service.process.pid):
            service.process.send_signal(signal.SIGSTOP)
            if meta_lock_holder(database, service.process.pid):
                return
            service.process.send_signal(signal.SIGCONT)
    pytest.fail("the node was never caught inside a write")


@pytest.mark.slow
def test_a_node_paused_inside_a_write_never_freezes_the_others(shared, start_nodes, database):
    settings = {"database_timeout_seconds": 2.0,
                "daemon": {"settle_seconds": 0.2, "batch_size": 2}}
    steady, stopped = start_nodes(node_workspace(shared, "steady", **settings),
                                  node_workspace(shared, "stopped", **settings))
    add_photos(shared.images, 200)
    stop_inside_a_write(stopped, database)
    try:
        frozen_at = time.monotonic()
        arrivals = add_photos(shared.images, 4, start=900)
        cropped_query(product_photo(3)).save(shared.inbox / "q.jpg")
        # Before: the steady node's next write waited on the lock for ever; now the server
        # ends the paused node's transaction after database_timeout_seconds.
        steady.wait_for(lambda: set(arrivals) <= set(rows(database)), "the new images",
                        timeout=120)
        steady.wait_for((shared.inbox / "q.jpg.neighbours.json").exists, "the answer",
                        timeout=30)
        assert time.monotonic() - frozen_at < 150
    finally:
        stopped.process.send_signal(signal.SIGCONT)
    steady.wait_for(lambda: len(rows(database)) == 204, "every image", timeout=300)
    stopped.wait_for(lambda: "database reachable again" in stopped.log(), "the paused node back")

    def problem_of(pid: int) -> str:
        listed = json.loads(lookalike(shared, "status", "--json").stdout)["nodes"]
        return next(node["last_problem"] or "" for node in listed if node["pid"] == pid)

    # The node that could not write says so in status (its transaction ended by the server).
    stopped.wait_for(lambda: "database unreachable" in problem_of(stopped.process.pid),
                     "status to show the problem", timeout=30)
    assert steady.stop() == 0 and stopped.stop() == 0


@pytest.mark.slow
def test_run_waits_for_a_database_that_starts_later(shared, server, service_factory, database):
    server.stop_only()
    try:
        node = service_factory(on=node_workspace(shared, "early"), wait=False)
        stopped = service_factory(on=node_workspace(shared, "stopped"), wait=False)
        for waiting in (node, stopped):
            waiting.wait_for(lambda w=waiting: "waiting for it" in w.log(), "the wait to be told")
        time.sleep(3)
        assert node.process.poll() is None  # before: exit 1 at once
        assert stopped.stop() == 0  # SIGTERM while waiting: a clean stop
        assert "stopped before the database could be reached" in stopped.log()
    finally:
        server.start()
    node.wait_for(lambda: "watching" in node.log(), "the start once the server is up")
    assert node.log().count("waiting for it") == 1
    assert node.stop() == 0
