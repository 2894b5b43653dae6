"""The library API: a catalogue opened from its config, asked what the CLI, the UI and HTTP ask.

    with Catalogue.opened("config.toml") as catalogue:
        catalogue.similar(["tops/12345.jpg"], k=10)      # from stored vectors: no model loaded
        catalogue.query([("photo.jpg", data)], k=10)     # embeds the photo
        catalogue.query_text([("q", "red floral dress")], k=10)  # a CLIP model's text tower
        catalogue.status()

Both searches use the catalogue's in-memory index, loaded on first use; `refresh()` applies what
the store changed since. The service hands its own index to the catalogue it serves over HTTP,
so the two share one copy of the vectors and the models.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from lookalike.api.app import App
from lookalike.base.errors import LookalikeError
from lookalike.search.follow import FollowedIndex
from lookalike.search.query import answer_queries, answer_similar, answer_texts
from lookalike.search.settings import MAX_K
from lookalike.store.status import catalogue_status
from lookalike.store.store import Store

Answer = dict[str, Any]  # the neighbours answer of docs/formats.md


class Catalogue:
    def __init__(self, app: App, store: Store, index: FollowedIndex | None = None,
                 index_name: str | None = None):
        """``index``: one already loaded (the service's); else one of the configured kind, or
        of the plugin ``index_name``, is loaded on first use."""
        self.app, self.store = app, store
        self._index, self._index_name = index, index_name
        self._loading = threading.Lock()

    @classmethod
    @contextmanager
    def opened(cls, config: str | None = None, offline: bool = False,
               index_name: str | None = None) -> Iterator[Catalogue]:
        """The catalogue of the config file ``config`` (None: $LOOKALIKE_CONFIG or
        ./config.toml); ``offline``: never fetch a missing model file."""
        app = App(config, offline)
        with app.opened_store() as store:
            yield cls(app, store, index_name=index_name)

    @property
    def model(self) -> str:
        """The pipeline's model id: only vectors it made are searched."""
        return self.app.pipeline.model_id

    @property
    def index(self) -> FollowedIndex:
        with self._loading:
            if self._index is None:
                self._index = FollowedIndex(self.store, self.model,
                                            self.app.vector_index(self._index_name),
                                            self.app.config.catalogue.snapshot)
            return self._index

    def query(self, images: Sequence[tuple[str, bytes]], k: int | None = None) -> list[Answer]:
        """One answer per (name, image bytes): the k catalogue images most like it."""
        return answer_queries(self.app.pipeline, self.index, images, self._k(k))

    def query_text(self, texts: Sequence[tuple[str, str]], k: int | None = None) -> list[Answer]:
        """One answer per (name, text): the k catalogue images that best match the words;
        LookalikeError (one line) when the embedder reads no words."""
        return answer_texts(self.app.pipeline, self.index, texts, self._k(k))

    def similar(self, paths: Sequence[str], k: int | None = None) -> list[Answer]:
        """One answer per catalogue path: the k images most like it, itself left out; an
        "error" field for a path that is not an indexed image."""
        return answer_similar(self.store, self.model, self.index, paths, self._k(k))

    def status(self) -> dict[str, Any]:
        """What `lookalike status --json` prints."""
        return catalogue_status(self.app.config.catalogue.database, self.store)

    def refresh(self) -> bool:
        """Apply what the store changed since the index was loaded; True when anything did."""
        return self.index.refresh()

    def _k(self, k: int | None) -> int:
        k = self.app.config.query.k if k is None else k
        if not 1 <= k <= MAX_K:
            raise LookalikeError(f"k must be 1 to {MAX_K}, not {k}")
        return k
