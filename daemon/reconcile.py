"""Start-up reconciliation: what changed in images_dir while nothing was watching."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from lookalike.pipeline.pipeline import Pipeline
from lookalike.store.store import Store

from .files import regular_file_inside, scan
from .ingest import IngestReport, ingest, is_current


def stale_paths(store: Store, images_dir: Path, model: str) -> tuple[list[str], int]:
    """Files that are new, changed or embedded by another model, then rows whose file is gone;
    and how many files are current."""
    known = store.file_states()
    on_disk, stale = set(), []
    for path in scan(images_dir):
        stat = regular_file_inside(images_dir, path)
        if stat is None:
            continue
        on_disk.add(path)
        if not is_current(known.get(path), stat, model):
            stale.append(path)
    gone = [path for path in known if path not in on_disk]
    return stale + gone, len(on_disk) - len(stale)


def reconcile(
    store: Store,
    pipeline: Pipeline,
    images_dir: Path,
    batch_size: int,
    should_stop: Callable[[], bool] = lambda: False,
) -> IngestReport:
    """Bring the store in line with images_dir, with a progress bar when stderr is a terminal."""
    paths, current = stale_paths(store, images_dir, pipeline.model_id)
    with progress_bar(len(paths)) as bar:
        report = ingest(store, pipeline, images_dir, paths, batch_size, on_progress=bar.update,
                        should_stop=should_stop)
    report.unchanged += current
    return report


def progress_bar(total: int):
    """A progress bar on stderr, drawn only when stderr is a terminal."""
    return click.progressbar(length=total, label="indexing", file=sys.stderr, show_pos=True,
                             hidden=not sys.stderr.isatty())


class Backlog:
    """The service's start-up reconciliation, worked off one batch at a time by its loop."""

    def __init__(self, total: int):
        self.left = total
        self._bar = progress_bar(total)
        if total:
            self._bar.render_progress()

    def advance(self, count: int) -> bool:
        """Count ``count`` processed files; True when that finished the backlog."""
        if self.left <= 0:
            return False
        done = min(count, self.left)
        self.left -= done
        self._bar.update(done)
        if self.left == 0:
            self._bar.render_finish()
            return True
        return False
