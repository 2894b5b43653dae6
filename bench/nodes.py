"""Several nodes on one PostgreSQL: one node against two, each pinned to one core.

Starts a PostgreSQL 15 of Debian's package in a temporary folder (the tests' server,
tests/postgres.py) and runs real `lookalike run` processes, each under `taskset -c K`, so each
node has one core and one thread per stage and the comparison is fair on a 2-core machine.
Prints, in one run:

- throughput: N studio photos (bench/embed.py's) moved into an empty images_dir watched by one
  node, then by two; images/s from the move to the last row, the ratio, each node's share, and
  duplicates (contents embedded more than once, from the nodes' logs);
- query latency on a query-only node (its own inbox; its images_dir an empty folder, as a
  front node that embeds nothing) while the other node ingests, against idle: a catalogue photo
  dropped into its inbox until its answer is written (settle_seconds 0.2 included);
- findability: an image embedded by the other node, from its row's commit to an answer on the
  query node that names it first;
- the ceiling: rows/s one server takes from K writer processes, each in batches of 16 as a
  node writes (claim 16 files and 16 contents, store 16 rows of 512-d vectors, release).

Needs a config whose model files exist (--config) and has no [daemon] table: the nodes'
configs are written beside it, with its tables.

    .venv/bin/python bench/nodes.py --config CONFIG [--images 2000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from embed import photos
from PIL import Image
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from postgres import PostgresServer  # noqa: E402 - the tests' server, started the same way

from lookalike.store.nodes import joined  # noqa: E402
from lookalike.store.store import ImageRow, Store  # noqa: E402

LOOKALIKE = str(Path(sys.executable).parent / "lookalike")
TOP_LEVEL = ("images_dir", "inbox_dir", "snapshot", "database")


class Node:
    """``lookalike run`` pinned to one core, on a config written beside the given one."""

    def __init__(self, config: Path, name: str, core: int, database: str, images: Path,
                 inbox: Path, snapshot: Path):
        text = config.read_text()
        first_table = text.find("\n[")
        head, tables = (text, "") if first_table < 0 else (text[:first_table], text[first_table:])
        head = "\n".join(line for line in head.splitlines()
                         if line.split("=")[0].strip() not in TOP_LEVEL)
        self.config = config.with_name(f".bench-{name}.toml")
        self.config.write_text(
            f'images_dir = "{images}"\ninbox_dir = "{inbox}"\nsnapshot = "{snapshot}"\n'
            f'database = "{database}"\n{head}\n{tables}\n[daemon]\nsettle_seconds = 0.2\n')
        self.log_path = images.parent / f"{name}.log"
        self.log_file = open(self.log_path, "w")  # noqa: SIM115 - lives as long as the node
        self.process = subprocess.Popen(
            ["taskset", "-c", str(core), LOOKALIKE, "run", "--config", str(self.config)],
            stdout=self.log_file, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, text: str) -> None:
        while text not in self.log():
            if self.process.poll() is not None:
                raise SystemExit(f"node exited:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def embedded(self) -> list[str]:
        return re.findall(r" indexed (\S+)$", self.log(), re.MULTILINE)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        self.log_file.close()
        self.config.unlink()


def wait_for_rows(database: str, count: int) -> None:
    """Until the store holds ``count`` rows; one connection, a count every 0.2 s (opening a
    Store each time would take CPU from the nodes)."""
    engine = create_engine(database)
    with engine.connect() as connection:
        while connection.scalar(text("SELECT count(*) FROM images")) < count:
            connection.rollback()
            time.sleep(0.2)
    engine.dispose()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` and its finished children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def server_cpu_seconds() -> float:
    """CPU time of every PostgreSQL server process (named postgres) alive now."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "postgres":
                total += cpu_seconds(int(entry.name))
        except OSError:  # ended meanwhile
            continue
    return total


def throughput(config: Path, server: PostgresServer, source: Path, tmp: Path, nodes: int):
    """Images/s of ``nodes`` nodes (one core each) on the photos of ``source``; each node's
    share, and how many contents were embedded more than once."""
    database = server.new_database()
    folder = tmp / f"run{nodes}"
    images, inbox = folder / "images", folder / "inbox"
    images.mkdir(parents=True)
    running = [Node(config, f"node{core}", core, database, images, inbox,
                    folder / "feature_vectors.pkl") for core in range(nodes)]
    for node in running:
        node.wait_for("watching")
    staging = folder / "staging"
    shutil.copytree(source, staging)
    total = len(list(staging.iterdir()))
    cpu_before = [cpu_seconds(node.process.pid) for node in running], server_cpu_seconds()
    started = time.perf_counter()
    os.rename(staging, images / "batch")  # one event: a folder of photos arrives
    wait_for_rows(database, total)
    elapsed = time.perf_counter() - started
    nodes_cpu = [cpu_seconds(node.process.pid) - before
                 for node, before in zip(running, cpu_before[0], strict=True)]
    server_cpu = server_cpu_seconds() - cpu_before[1]
    shares = [len(node.embedded()) for node in running]
    twice = sum(n - 1 for n in Counter(p for node in running for p in node.embedded()).values())
    for node in running:
        node.stop()
    print(f"{nodes} node(s): {total / elapsed:6.1f} images/s; CPU busy: nodes "
          f"{', '.join(f'{c / elapsed:.0%}' for c in nodes_cpu)} of a core, PostgreSQL "
          f"{server_cpu / elapsed:.0%}; CPU ms per image: nodes "
          f"{sum(nodes_cpu) / total * 1000:.1f}, PostgreSQL {server_cpu / total * 1000:.1f}")
    return total / elapsed, shares, twice


def latency(config: Path, server: PostgresServer, source: Path, tmp: Path):
    """Answer times on a query-only node, idle and while another node ingests; and how soon
    an image the other node embeds is found there."""
    database = server.new_database()
    folder = tmp / "latency"
    images, inbox, own_inbox, nothing = (folder / "images", folder / "inbox",
                                         folder / "front-inbox", folder / "nothing")
    for path in (images, own_inbox, nothing):
        path.mkdir(parents=True)
    names = sorted(p.name for p in source.iterdir())
    shutil.copy(source / names[0], images / names[0])
    ingesting = Node(config, "ingesting", 0, database, images, inbox, folder / "f.pkl")
    ingesting.wait_for("watching")
    wait_for_rows(database, 1)
    front = Node(config, "front", 1, database, nothing, own_inbox, folder / "f.pkl")
    front.wait_for("watching")

    def answer_seconds(count: int, tag: str) -> list[float]:
        times = []
        for i in range(count):
            query = own_inbox / f"{tag}{i}.jpg"
            answer = own_inbox / f"{tag}{i}.jpg.neighbours.json"
            started = time.perf_counter()
            shutil.copy(source / names[0], query)
            while not answer.exists():
                time.sleep(0.01)
            times.append(time.perf_counter() - started)
        return times

    idle = answer_seconds(10, "idle")
    shutil.copytree(source, folder / "staging", ignore=shutil.ignore_patterns(names[0]))
    os.rename(folder / "staging", images / "batch")
    busy = answer_seconds(10, "busy")
    wait_for_rows(database, len(names))
    # An image the ingesting node embeds, looked for on the front node.
    image = np.full((640, 480, 3), 250, np.uint8)
    image[100:500, 90:390] = (30, 140, 200)
    Image.fromarray(image).save(folder / "new.jpg", quality=90)
    os.rename(folder / "new.jpg", images / "new.jpg")
    wait_for_rows(database, len(names) + 1)
    committed = time.perf_counter()
    shutil.copy(images / "new.jpg", own_inbox / "new.jpg")
    answer = own_inbox / "new.jpg.neighbours.json"
    while not answer.exists():
        time.sleep(0.01)
    found = time.perf_counter() - committed
    named_first = '"path": "new.jpg"' in answer.read_text().split('"rank": 2')[0]
    ingesting.stop()
    front.stop()
    return idle, busy, found, named_first


def write_batches(database: str, writer: int, seconds: float, queue) -> None:
    """As a node writes: claim 16 files and their 16 contents, store 16 rows, release; rows
    stored in ``seconds``."""
    store = Store(database)
    rng = np.random.default_rng(writer)
    rows = 0
    with joined(store, "index", "bench") as node:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            batch = [ImageRow(f"w{writer}/{rows + i}.jpg", f"{writer}-{rows + i}", 100, 1, 480,
                              640, "bench", rng.standard_normal(512, np.float32).tobytes(),
                              removal="plain@1") for i in range(16)]
            keys = ([f"file:{row.path}" for row in batch]
                    + [f"content:{row.sha256}" for row in batch])
            node.claims.take(keys)
            store.write_rows(batch)
            node.claims.release(keys)
            rows += len(batch)
    store.close()
    queue.put(rows)


def ceiling(server: PostgresServer, writers: int, seconds: float = 10.0) -> float:
    database = server.new_database()
    Store(database).close()  # the schema, made once
    queue = multiprocessing.Queue()
    processes = [multiprocessing.Process(target=write_batches, args=(database, w, seconds, queue))
                 for w in range(writers)]
    for process in processes:
        process.start()
    rows = sum(queue.get() for _ in processes)
    for process in processes:
        process.join()
    return rows / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--images", type=int, default=2000)
    args = parser.parse_args()
    config = args.config.resolve()
    server = PostgresServer()
    try:
        with tempfile.TemporaryDirectory(prefix="lookalike-nodes-") as tmp:
            tmp = Path(tmp)
            source = tmp / "source"
            source.mkdir()
            photos(source, args.images)
            print(f"{os.cpu_count()} cores; {args.images} photos of 480x640; "
                  f"one core per node (taskset)")
            one, _, twice_one = throughput(config, server, source, tmp, 1)
            two, shares, twice_two = throughput(config, server, source, tmp, 2)
            print(f"throughput: 1 node {one:6.1f} images/s, 2 nodes {two:6.1f} images/s = "
                  f"{two / one:.2f} x (target >= 1.8); shares {shares}; contents embedded "
                  f"twice: {twice_one} (1 node), {twice_two} (2 nodes) (target 0)")
            idle, busy, found, named_first = latency(config, server, source, tmp)
            print(f"query on a front node: idle median {statistics.median(idle) * 1000:.0f} ms "
                  f"(max {max(idle) * 1000:.0f}), while the other node ingests median "
                  f"{statistics.median(busy) * 1000:.0f} ms (max {max(busy) * 1000:.0f}); "
                  "settle 200 ms included")
            print(f"findable on the front node {found * 1000:.0f} ms after the other node "
                  f"stored it (named first: {named_first})")
            for writers in (1, 2, 4):
                rate = ceiling(server, writers)
                print(f"ceiling: {writers} writer process(es) {rate:8.0f} rows/s "
                      f"= {rate / one:5.0f} one-core nodes")
            print(f"on paper: 10,000,000 images at {one:.1f} images/s per core: "
                  f"{10_000_000 / one / 3600:.0f} core-hours")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
