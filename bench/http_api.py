"""The HTTP API of a running service, beside the cost of what it wraps, side by side in one run.

For each catalogue size N (512-d vectors filled into a fresh SQLite store under the config's
model id; the images_dir is empty, so the start-up rescan holds back rather than forgetting), a
real `lookalike run` with [http] on loopback is started, then:

1. /similar: p50 / p99 over HTTP with 1 and with 8 concurrent clients, beside the index's own
   search time with 1 and 8 threads at once (the configured index plugin loaded here with the
   same vectors);
2. /query with an 800x1200 JPEG product photo on a plain background: p50 / p99 over HTTP,
   beside the same image through the pipeline directly (decode, removal, embedding, search);
3. a flood of --flood photos dropped into images_dir with 4 clients calling /similar in a loop:
   the ingest rate against the same flood with no client, and the clients' p99, beside the
   same flood with 4 threads here searching the index in a loop instead (their own p99).
   Every flood photo is its own (a copy's vector would be reused, not embedded); 20 photos,
   untimed, come first, and each phase waits for the service's snapshot of what it stored.

    .venv/bin/python bench/http_api.py --config CONFIG [--sizes 100000] [--requests 400]
        [--flood 400] [--keep DIR]

With --keep, DIR/workspace-N (its store, its saved graph, the flood's photos) is kept and used
again by the next run: a million-vector "hnsw" graph is built once, not at every run.

CONFIG names the model files (tests' models: bench/RESULTS.md says how to make them).
Clients use the standard library's http.client, one keep-alive connection each, so the figures
are the service's: httpx, the tests' client, spends about 0.6 ms more per request of its own.
"""

from __future__ import annotations

import argparse
import http.client
import io
import itertools
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from flood import workspace_from
from memory import fill

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from builders import marked_photo, product_photo  # noqa: E402
from lookalike.api.app import App  # noqa: E402
from lookalike.search.follow import FollowedIndex  # noqa: E402
from lookalike.store.schema import INDEXED  # noqa: E402
from lookalike.store.store import Store  # noqa: E402
from running import RunningService, free_port, query_db  # noqa: E402

K = 10


def percentiles(seconds: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(np.array(seconds) * 1000, [50, 99])
    return float(p50), float(p99)


def shown(label: str, seconds: list[float]) -> str:
    p50, p99 = percentiles(seconds)
    return f"  {label:<46} p50 {p50:8.2f} ms   p99 {p99:8.2f} ms"


def timed_calls(call, arguments: list) -> list[float]:
    times = []
    for argument in arguments:
        started = time.perf_counter()
        call(argument)
        times.append(time.perf_counter() - started)
    return times


def side_by_side(first, second, arguments: list) -> tuple[list[float], list[float]]:
    """Each argument through ``first`` then ``second``, alternating, so both see the same
    moments of a shared, noisy machine."""
    times: tuple[list[float], list[float]] = ([], [])
    for argument in arguments:
        for call, kept in zip((first, second), times, strict=True):
            started = time.perf_counter()
            call(argument)
            kept.append(time.perf_counter() - started)
    return times


def concurrently(clients: int, work) -> list[float]:
    """``work(client_number)`` on ``clients`` threads at once; their timings together."""
    results: list[list[float]] = [[] for _ in range(clients)]
    threads = [threading.Thread(target=lambda n=n: results[n].extend(work(n)))
               for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [t for result in results for t in result]


def request(port: int):
    """A function sending (method, url, body) over one keep-alive connection to ``port``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def send(method: str, url: str, body: bytes | None = None) -> bytes:
        connection.request(method, url, body)
        response = connection.getresponse()
        answer = response.read()
        assert response.status == 200, answer
        return answer

    return send


def similar_call(port: int):
    send = request(port)
    return lambda path: send("GET", f"/similar?path={path}&k={K}")


def photo_jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    product_photo(seed, size=(800, 1200)).save(out, "JPEG", quality=90)
    return out.getvalue()


def measure(config: Path, size: int, requests: int, flood: int, keep: Path | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        root = keep / f"workspace-{size}" if keep else Path(tmp) / "workspace"
        workspace = workspace_from(config, root, remover="auto",
                                   http={"listen": f"127.0.0.1:{port}"})
        app = App(str(workspace.config))
        model = app.pipeline.model_id
        if not (workspace.root / "lookalike.db").exists():
            started = time.perf_counter()
            fill(f"sqlite:///{workspace.root / 'lookalike.db'}", model, size)
            print(f"N={size:,}: store filled in {time.perf_counter() - started:.0f} s",
                  flush=True)
        # A kept workspace's last run: its log, and its flood's photos (the start removes them
        # from the store, so this run's flood is counted from nothing).
        (workspace.root / "service.log").unlink(missing_ok=True)
        leftovers = [*workspace.root.glob("staging-*/*"), *workspace.images.iterdir()]
        for leftover in leftovers:
            leftover.unlink()
        changed = leftovers or not (workspace.root / "feature_vectors.pkl").exists()
        service = RunningService(workspace, wait=False)
        try:
            service.wait_for(lambda: "answering HTTP" in service.log(), "HTTP", 3600)
            if changed:  # the start writes the snapshot again
                snapshot_written(workspace, service)
            report(app, workspace, service, port, size, requests, flood)
        finally:
            service.stop()


def report(app: App, workspace, service, port: int, size: int, requests: int,
           flood: int) -> None:
    rng = np.random.default_rng(1)
    paths = [f"{i:07d}.jpg" for i in rng.integers(0, size, requests)]
    store = Store(f"sqlite:///{workspace.root / 'lookalike.db'}")
    # The saved graph of a kept workspace, restored as the service restored it (an "hnsw"
    # graph of a million takes 19 minutes to build; the service saves it at its stop), else
    # built here; the exact index is loaded from the store.
    index = FollowedIndex(store, app.pipeline.model_id, app.vector_index(),
                          workspace.root / "feature_vectors.pkl")
    vectors = {path: index.vector(path) for path in paths}
    similar = similar_call(port)
    similar(paths[0])  # a first request sets up the connection
    search = searcher(index, vectors)
    own, over_http = side_by_side(search, similar, paths)
    print(shown(f"index search alone ({app.config.pipeline.index})", own))
    print(shown("GET /similar, 1 client", over_http))
    eight_here = concurrently(8, lambda n: timed_calls(search, paths[n::8]))
    eight = concurrently(8, lambda n: timed_calls(similar_call(port), paths[n::8]))
    print(shown("index search, 8 threads at once", eight_here))
    print(shown("GET /similar, 8 clients", eight))
    print(f"  GET /similar p50 over the index's: "
          f"+{percentiles(over_http)[0] - percentiles(own)[0]:.2f} ms (1 client), "
          f"+{percentiles(eight)[0] - percentiles(eight_here)[0]:.2f} ms (8 clients)")

    photos = [photo_jpeg(seed) for seed in range(40)]
    pipeline = app.pipeline
    pipeline.warm_up()

    def direct(data: bytes) -> None:
        prepared = pipeline.prepare(data)
        index.search(pipeline.embed([prepared.square])[0], K)

    direct(photos[0])
    send = request(port)
    alone, over_http = side_by_side(direct, lambda data: send("POST", "/query", data), photos)
    print(shown("800x1200 JPEG through the pipeline directly", alone))
    print(shown("POST /query, the same JPEGs", over_http))
    print(f"  POST /query p50 over the pipeline's: "
          f"{percentiles(over_http)[0] / percentiles(alone)[0]:.2f}")

    run = f"{time.time_ns()}"  # a kept store may still hold an earlier run's flood rows
    # A first few photos, not counted: the service loads its models at its first photo, and
    # the flood timed first would pay for that.
    warm = min(flood, 20)
    flood_rate(workspace, service, warm, f"w{run}-", first=0)
    alone, _ = flood_rate(workspace, service, flood, f"a{run}-", first=warm)
    print(f"  flood of {flood} alone: {alone:.1f} images/s")
    # The same flood with four of this process's threads searching its own copy of the index
    # in a loop: what the searches cost on this machine meanwhile, without HTTP.
    for number, (who, make_search, prefix) in enumerate((
            ("4 threads searching the index here", lambda: search, "t"),
            ("4 clients on /similar", lambda: similar_call(port), "c")), start=1):
        rate, seconds = flood_rate(workspace, service, flood, f"{prefix}{run}-",
                                   warm + number * flood, make_search, paths)
        p50, p99 = percentiles(seconds)
        print(f"  flood of {flood} with {who}: {rate:.1f} images/s ({rate / alone:.2f} of "
              f"alone); p50 {p50:.2f} ms, p99 {p99:.2f} ms over {len(seconds)} searches")
    store.close()


def searcher(index: FollowedIndex, vectors: dict[str, np.ndarray]):
    """A function searching ``index`` for a path's neighbours as /similar does: k + 1, the
    path itself among them."""
    return lambda path: index.search(vectors[path], K + 1)


def flood_rate(workspace, service, count: int, prefix: str, first: int, make_search=None,
               paths: list[str] = ()) -> tuple[float, list[float]]:
    """Images per second while ``count`` photos (marked ``first`` on) arrive at once; with
    ``make_search``, four threads meanwhile searching ``paths`` with it in a loop
    (threads_searching), and their timings."""
    staging = workspace.root / f"staging-{prefix[0]}"
    staging.mkdir(exist_ok=True)
    for number in range(first, first + count):  # each of its own: none reuses a vector
        marked_photo(number, size=(320, 400)).save(staging / f"{prefix}{number:05d}.jpg",
                                                   quality=90)
    stopped = (threads_searching(make_search, [paths[n::4] for n in range(4)]) if make_search
               else list)
    started = time.perf_counter()
    for file in sorted(staging.iterdir()):
        file.rename(workspace.images / file.name)
    service.wait_for(lambda: query_db(workspace, "SELECT count(*) FROM images WHERE path LIKE ?",
                                      f"{prefix}%")[0][0] == count,
                     f"{count} images indexed", 3600)
    rate = count / (time.perf_counter() - started)
    timings = stopped()
    snapshot_written(workspace, service)
    return rate, timings


def snapshot_written(workspace, service) -> None:
    """Wait for the snapshot of every image stored: the service writes it once idle (21-38 s
    at a million), and a phase measured meanwhile would share the machine with it."""
    stored = query_db(workspace, "SELECT count(*) FROM images WHERE status = ?", INDEXED)[0][0]
    service.wait_for(lambda: [int(n) for n in re.findall(r"snapshot written: (\d+) images",
                                                         service.log())][-1:] == [stored],
                     f"the snapshot of {stored} images", 600)


def threads_searching(make_search, path_lists: list[list[str]]):
    """A thread here for each list, calling its own ``make_search()`` on its paths round and
    round; returns a function that stops them and gives their timings."""
    done, timings = threading.Event(), []

    def loop(paths: list[str]) -> None:
        search = make_search()
        for path in itertools.cycle(paths):
            if done.is_set():
                return
            started = time.perf_counter()
            search(path)
            timings.append(time.perf_counter() - started)

    threads = [threading.Thread(target=loop, args=(paths,)) for paths in path_lists]
    for thread in threads:
        thread.start()

    def stopped() -> list[float]:
        done.set()
        for thread in threads:
            thread.join()
        return timings

    return stopped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--sizes", default="100000")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--flood", type=int, default=400)
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep each size's workspace in this folder and use it again")
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        measure(args.config.resolve(), size, args.requests, args.flood, args.keep)


if __name__ == "__main__":
    main()
