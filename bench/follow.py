"""What the UI pays to follow a catalogue of N images that another process writes.

Fills a SQLite store with N 512-d vectors, builds the index the UI holds (FollowedIndex over the
exact index), then times, with a second Store as the writer: the check every UI panel makes
every 5 s when nothing changed, the refresh after one image and after 1,000 images arrive,
after one is deleted, and the catalogue browser's count and first page (all paths, and a filter).

    .venv/bin/python bench/follow.py --config CONFIG [--sizes 100000,1000000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from memory import fill, unit_vectors

from lookalike.api.app import App
from lookalike.search.follow import FollowedIndex
from lookalike.store.store import ImageRow, Store


def timed(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def new_images(model: str, names: list[str]) -> list[ImageRow]:
    vectors = unit_vectors(np.random.default_rng(len(names)), len(names))
    return [ImageRow(name, name.ljust(64, "0"), 1, 1, 1, 1, model, vector.tobytes())
            for name, vector in zip(names, vectors, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--sizes", default="100000,1000000")
    args = parser.parse_args()
    app = App(args.config)
    model = app.pipeline.model_id
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            database = Path(tmp) / "bench.db"
            fill(f"sqlite:///{database}", model, size)
            url = f"sqlite:///{database}"
            reader, writer = Store(url), Store(url)
            started = time.perf_counter()
            followed = FollowedIndex(reader, model, app.vector_index("exact"))
            print(f"N={size:>9,}  index loaded in {time.perf_counter() - started:.1f} s")
            idle = statistics.median(timed(followed.refresh) for _ in range(20))
            print(f"  check, nothing changed (p50 of 20)   {idle * 1000:8.1f} ms")
            changes = {  # what the writer does: (new rows, paths deleted)
                "1 new image": (new_images(model, ["new/one.jpg"]), []),
                "1,000 new images": (
                    new_images(model, [f"new/{i:04d}.jpg" for i in range(1000)]), []),
                "1 deletion": ([], ["new/one.jpg"]),
            }
            for change, (facts, gone) in changes.items():
                writer.write_rows(facts, gone)
                print(f"  refresh after {change:<22} {timed(followed.refresh) * 1000:8.1f} ms")
            statuses = timed(reader.counts)
            print(f"  counts by model and status (status){statuses * 1000:8.1f} ms")
            assert followed.size == size + 1000
            for contains in ("", "0042"):
                count = timed(reader.count_indexed, model, contains)
                page = timed(reader.indexed_paths, model, contains, 0, 24)
                print(f"  browser, filter {contains!r:<8} count {count * 1000:8.1f} ms, "
                      f"first page {page * 1000:8.1f} ms")
            reader.close()
            writer.close()


if __name__ == "__main__":
    main()
