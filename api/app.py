"""What every command needs: the config, the plugins, the store and the pipeline."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from lookalike.api.config import Config, config_path, load_config
from lookalike.base.errors import ConfigError
from lookalike.daemon.lock import ServiceLock, lock_path
from lookalike.models.files import ModelSource
from lookalike.pipeline.plugins import StepPlugin, collect_steps, installed, plugin_manager
from lookalike.pipeline.steps import VectorIndex
from lookalike.store.status import catalogue_status, sqlite_reader
from lookalike.store.urls import database_exists, sqlite_file

if TYPE_CHECKING:  # imported where used: `lookalike status` needs no SQLAlchemy, numpy or Pillow
    from lookalike.pipeline.pipeline import Pipeline
    from lookalike.store.nodes import ThisNode
    from lookalike.store.store import Store


@dataclass
class App:
    config_option: str | None
    offline: bool = False  # --offline: never fetch a missing model file

    @cached_property
    def steps(self) -> dict[str, dict[str, StepPlugin]]:
        return collect_steps(plugin_manager())

    @cached_property
    def config(self) -> Config:
        return load_config(config_path(self.config_option), self.steps)

    @cached_property
    def pipeline(self) -> Pipeline:
        from lookalike.pipeline.pipeline import Pipeline

        config = self.config
        return Pipeline.build(self.steps, config.pipeline, config.tables, config.base_dir,
                              self.models, config.onnxruntime)

    @property
    def models(self) -> ModelSource:
        source = self.config.models
        return replace(source, fetch=False) if self.offline else source

    def vector_index(self, name: str | None = None) -> VectorIndex:
        """A new, empty vector index: the configured one, or the plugin called ``name``."""
        name = name or self.config.pipeline.index
        plugin = installed(self.steps, "index", name)
        return plugin.build(self.config.tables.get(name, {}), self.config.base_dir, self.models,
                            self.config.onnxruntime)

    @contextmanager
    def opened_store(self, stop: threading.Event | None = None) -> Iterator[Store]:
        """The store; with ``stop``, waited for while its server cannot be reached (until
        ``stop`` is set)."""
        from lookalike.store.store import Store

        catalogue = self.config.catalogue
        store = (Store.when_reachable(catalogue.database, catalogue.database_timeout_seconds,
                                      stop) if stop is not None
                 else Store(catalogue.database, catalogue.database_timeout_seconds))
        try:
            yield store
        finally:
            store.close()

    def status(self) -> dict[str, Any]:
        """What `lookalike status --json` prints, making nothing where there is no database
        yet. A SQLite file of this schema is read with sqlite3 alone (see store/status.py);
        a server, or a file to upgrade, through the store."""
        url = self.config.catalogue.database
        if not database_exists(url):
            return catalogue_status(url, None)
        file = sqlite_file(url)
        if file:
            with sqlite_reader(file) as reader:
                if reader is not None:
                    return catalogue_status(url, reader)
        with self.opened_store() as store:
            return catalogue_status(url, store)

    @contextmanager
    def locked(self, command: str) -> Iterator[None]:
        """Held while ``command`` (run or index) writes: one writer per SQLite file (a
        database server is shared by nodes)."""
        path = lock_path(self.config.catalogue.database)
        lock = ServiceLock(path) if path else None
        if lock:
            lock.acquire(command)
        try:
            yield
        finally:
            if lock:
                lock.release()

    @contextmanager
    def node(self, store: Store, command: str) -> Iterator[ThisNode]:
        """This process as a node of the store while ``command`` (run or index) works."""
        from lookalike.store.nodes import forget_nodes, joined

        if lock_path(self.config.catalogue.database):  # the lock held: any node there is dead
            forget_nodes(store)
        lease = self.config.daemon.lease_seconds
        providers = (", ".join(self.config.onnxruntime.chosen()) if self.pipeline.runs_onnx
                     else None)
        with joined(store, command, self.pipeline.model_id, lease, self.pipeline.limits,
                    providers) as node:
            yield node

    def check_snapshot_folder(self) -> None:
        folder = self.config.catalogue.snapshot.parent
        if not folder.is_dir():
            raise ConfigError(f"{self.config.path}: the folder of snapshot ({folder}) does not "
                              "exist")
