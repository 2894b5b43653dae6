"""250 small images at once: all indexed, memory bounded, readers never blocked, a
SIGTERM mid-flood obeyed. bench/flood.py runs the same flood with 10,000 (a soak)."""

from __future__ import annotations

import json
import random
import shutil
import signal
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from builders import cropped_query, product_photo
from lookalike.store.snapshot import read_snapshot
from running import RunningService, lookalike, query_db

pytestmark = pytest.mark.slow

FLOOD = 250


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def indexed_count(workspace) -> int:
    return query_db(workspace, "SELECT count(*) FROM images WHERE status = 'indexed'")[0][0]


def small_images(folder: Path, count: int) -> None:
    rng = random.Random(0)
    folder.mkdir()
    for i in range(count):
        image = Image.new("RGB", (48, 48), (250, 250, 250))
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        ImageDraw.Draw(image).rectangle([rng.randrange(20), rng.randrange(20), 40, 44],
                                        fill=colour)
        image.putpixel((i % 48, (i // 48) % 48), (i % 256, (i // 256) % 256, 3))
        image.save(folder / f"s{i:05d}.png")


def flood(workspace, query_photo: Path, staging: Path, count: int,
          reader_pause: float) -> dict:
    """Drop ``count`` images from ``staging`` into a running service's images_dir (which holds
    item06.jpg); while it ingests, run status and query (a crop of item06) every
    ``reader_pause`` seconds and SIGTERM it after the first round (ingest under way: a flood
    of small images is in within seconds on a quiet machine). Returns the figures."""
    service = RunningService(workspace)
    service.wait_for(lambda: indexed_count(workspace) == 1, "the first image")
    baseline = rss_mb(service.process.pid)
    started = time.monotonic()
    for path in sorted(staging.iterdir()):
        shutil.copy(path, workspace.images / path.name)
    dropped = time.monotonic() - started
    peak, readers, stop_seconds = baseline, 0, None
    deadline = time.monotonic() + 3600
    while indexed_count(workspace) < count + 1 or readers < 2:  # a fast flood: two rounds
        assert time.monotonic() < deadline, "flood not indexed within an hour"
        peak = max(peak, rss_mb(service.process.pid))
        # Readers while the service ingests at full speed: no lock errors, no half files.
        status = lookalike(workspace, "status", "--json")
        assert status.returncode == 0, status.stderr
        answer = lookalike(workspace, "query", str(query_photo), "--json", "-k", "1")
        assert answer.returncode == 0, answer.stderr
        assert json.loads(answer.stdout)["neighbours"][0]["path"] == "item06.jpg"
        read_snapshot(workspace.root / "feature_vectors.pkl")
        readers += 1
        if stop_seconds is None:
            # SIGTERM mid-flood, while the model runs: gone within 5 s, then carry on.
            signalled = time.monotonic()
            assert service.stop(signal.SIGTERM) == 0
            stop_seconds = time.monotonic() - signalled
            service = RunningService(workspace)
        time.sleep(reader_pause)  # a query's cold start costs a core; leave CPU to ingest
    service.wait_for(lambda: len(read_snapshot(workspace.root / "feature_vectors.pkl")["paths"])
                     == count + 1, "the final snapshot")
    elapsed = time.monotonic() - started
    assert service.stop() == 0
    return {"dropped": dropped, "elapsed": elapsed, "baseline": baseline, "peak": peak,
            "readers": readers, "stop_seconds": stop_seconds}


def report(count: int, figures: dict) -> str:
    return (f"flood: {count} images dropped in {figures['dropped']:.1f} s, indexed in "
            f"{figures['elapsed']:.0f} s ({count / figures['elapsed']:.1f}/s); RSS baseline "
            f"{figures['baseline']:.0f} MB, peak {figures['peak']:.0f} MB; {figures['readers']} "
            f"status+query rounds during ingest; SIGTERM exit in "
            f"{figures['stop_seconds']:.2f} s")


def test_a_flood_of_small_images(workspace, catalogue, tmp_path):
    workspace.write_config(pipeline={"remover": "none"})
    small_images(tmp_path / "staging", FLOOD)
    shutil.copy(catalogue / "item06.jpg", workspace.images / "item06.jpg")
    query = tmp_path / "query.jpg"
    cropped_query(product_photo(6)).save(query)
    figures = flood(workspace, query, tmp_path / "staging", FLOOD, reader_pause=2.0)
    print("\n" + report(FLOOD, figures))
    assert figures["readers"] >= 2 and figures["stop_seconds"] < 5
    growth = figures["peak"] - figures["baseline"]
    assert growth < 500, f"memory grew by {growth:.0f} MB"
