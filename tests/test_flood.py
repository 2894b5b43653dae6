"""10,000 small images at once: all indexed, memory bounded, readers never blocked.

The slowest test by far (the real ResNet-18 embeds every image); it prints its figures.
"""

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

FLOOD = 10_000


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


def test_ten_thousand_images_at_once(workspace, catalogue, tmp_path):
    workspace.write_config(pipeline={"remover": "none"})
    staging = tmp_path / "staging"
    small_images(staging, FLOOD)
    shutil.copy(catalogue / "item06.jpg", workspace.images / "item06.jpg")
    service = RunningService(workspace)
    service.wait_for(lambda: indexed_count(workspace) == 1, "the first image")
    baseline = rss_mb(service.process.pid)

    started = time.monotonic()
    for path in sorted(staging.iterdir()):
        shutil.copy(path, workspace.images / path.name)
    dropped = time.monotonic() - started

    peak, readers, stop_seconds = baseline, 0, None
    query = tmp_path / "query.jpg"
    cropped_query(product_photo(6)).save(query)
    deadline = time.monotonic() + 3600
    while indexed_count(workspace) < FLOOD + 1:
        assert time.monotonic() < deadline, "flood not indexed within an hour"
        peak = max(peak, rss_mb(service.process.pid))
        # Readers while the service ingests at full speed: no lock errors, no half files.
        status = lookalike(workspace, "status", "--json")
        assert status.returncode == 0, status.stderr
        answer = lookalike(workspace, "query", str(query), "--json", "-k", "1")
        assert answer.returncode == 0, answer.stderr
        assert json.loads(answer.stdout)["neighbours"][0]["path"] == "item06.jpg"
        read_snapshot(workspace.root / "feature_vectors.pkl")
        readers += 1
        if stop_seconds is None and indexed_count(workspace) > FLOOD // 3:
            # SIGTERM mid-flood, while the model runs: gone within 5 s, then carry on.
            signalled = time.monotonic()
            assert service.stop(signal.SIGTERM) == 0
            stop_seconds = time.monotonic() - signalled
            service = RunningService(workspace)
        time.sleep(15)  # a query's cold start costs a core for seconds; leave CPU to ingest
    service.wait_for(lambda: len(read_snapshot(workspace.root / "feature_vectors.pkl")["paths"])
                     == FLOOD + 1, "the final snapshot")
    elapsed = time.monotonic() - started
    assert service.stop() == 0
    print(f"\nflood: {FLOOD} images dropped in {dropped:.1f} s, indexed in {elapsed:.0f} s "
          f"({FLOOD / elapsed:.1f}/s); RSS baseline {baseline:.0f} MB, peak {peak:.0f} MB; "
          f"{readers} status+query rounds during ingest; SIGTERM exit in {stop_seconds:.2f} s")
    assert stop_seconds < 5
    assert peak - baseline < 500, f"memory grew by {peak - baseline:.0f} MB"
