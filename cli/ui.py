"""The Streamlit app that `lookalike ui` serves: query the live catalogue by photo or by item.

Streamlit runs this file from the top on every interaction; what must outlive one run (the
catalogue: its pipeline, its store, and the index that follows it) is built once per process by
cache_resource. Where a service on the same database answers HTTP, the page asks it and never
loads an index of its own; otherwise it loads one. The config comes from $LOOKALIKE_CONFIG,
which `lookalike ui` sets.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import streamlit as st

from lookalike.api.app import App
from lookalike.api.catalogue import Catalogue
from lookalike.api.config import CONFIG_ENV
from lookalike.base.errors import ImageError, LookalikeError
from lookalike.base.files import file_path
from lookalike.pipeline.builtins.auto_remover import PLAIN
from lookalike.pipeline.pipeline import NO_TEXT_TOWER, Pipeline, Prepared
from lookalike.search.query import EMPTY_INDEX, answer_queries
from lookalike.search.settings import MAX_K
from lookalike.store.store import Store

REFRESH_SECONDS = 5  # how often the catalogue panels look for new, changed and removed images
PAGE_SIZE = 24
GRID_COLUMNS = 6
THUMBNAIL_SIDE = 256
FAILURES_SHOWN = 200


@st.cache_resource(show_spinner="Loading the models…")
def open_catalogue() -> Catalogue:
    app = App(None)
    app.pipeline.warm_up()
    settings = app.config.catalogue
    return Catalogue(app, Store(settings.database, settings.database_timeout_seconds))


@st.cache_data(ttl=REFRESH_SECONDS, show_spinner=False)
def answering_service(_catalogue: Catalogue) -> str | None:
    """The URL of a live service on this database that answers HTTP, if there is one."""
    return next((node.http for node in _catalogue.store.nodes() if node.live and node.http),
                None)


def asked(url: str, token: str, query: dict, k: int) -> dict[str, Any] | None:
    """The service's answer to a query, an image or words (its error as an answer); None
    when it cannot be reached, so the page answers itself."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if query["text"] is not None:
        words = urllib.parse.urlencode({"text": query["text"], "k": k})
        request = urllib.request.Request(f"{url}/query?{words}", headers=headers)
    else:
        request = urllib.request.Request(f"{url}/query?k={k}", data=query["data"],
                                         method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            return {"error": json.load(exc)["error"], "neighbours": []}
        except (ValueError, KeyError):
            return {"error": f"the service answered {exc.code}", "neighbours": []}
    except OSError:
        return None


def thumbnail(pipeline: Pipeline, data: bytes) -> bytes | None:
    """A small JPEG of the image as the pipeline's decoder reads it (orientation applied);
    None when it cannot be read."""
    try:
        image = pipeline.decode(data, THUMBNAIL_SIDE)
    except ImageError:
        return None
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


@st.cache_data(max_entries=5000, show_spinner=False)
def catalogue_thumbnail(_pipeline: Pipeline, path: Path, mtime_ns: int) -> bytes | None:
    """The thumbnail of a catalogue file, cached until the file changes."""
    try:
        return thumbnail(_pipeline, path.read_bytes())
    except OSError:
        return None


def show_catalogue_image(app: App, path: str, **image_options) -> None:
    file = file_path(app.config.catalogue.images_dir, path)
    try:
        image = catalogue_thumbnail(app.pipeline, file, file.stat().st_mtime_ns)
    except OSError:
        image = None
    if image is None:
        st.caption("(file missing or unreadable)")
    else:
        st.image(image, **image_options)


def choose_query(pipeline: Pipeline, name: str, data: bytes, item: str | None = None) -> None:
    """Make (name, data) the query; ``item`` is its catalogue path when it came from there.
    Its digest and thumbnail are made here once, not on every rerun of the page."""
    st.session_state.query = {"name": name, "data": data, "item": item, "text": None,
                              "digest": hashlib.sha256(data).hexdigest(),
                              "thumbnail": thumbnail(pipeline, data)}


def use_words() -> None:
    """Make the words typed the query (a CLIP embedder's text tower answers it)."""
    text = " ".join(st.session_state.words.split())
    if not text:
        st.session_state.pop("query", None)
        return
    st.session_state.query = {"name": text, "data": None, "item": None, "text": text,
                              "digest": hashlib.sha256(text.encode()).hexdigest(),
                              "thumbnail": None}


def use_upload(pipeline: Pipeline) -> None:
    upload = st.session_state.upload
    if upload is None:
        st.session_state.pop("query", None)
    else:
        choose_query(pipeline, upload.name, upload.getvalue())


def use_catalogue_item(app: App, path: str) -> None:
    try:
        data = app.pipeline.read_file(file_path(app.config.catalogue.images_dir, path))
    except ImageError as exc:
        st.session_state.query_problem = f"{path}: {exc}"
    else:
        choose_query(app.pipeline, path, data, item=path)


def answer_for(catalogue: Catalogue, query: dict, k: int):
    """The answer to the query and the square the model saw, asked again only when the query,
    k, the catalogue or who answers changed: the service over HTTP where one answers, else
    this page's own index."""
    url = answering_service(catalogue)
    key = (query["name"], query["digest"], k, catalogue.store.generation(), url)
    if st.session_state.get("answer_key") != key:
        answer, words = None, query["text"] is not None
        if url:
            seen = [None if words else prepared(catalogue.app.pipeline, query["data"])]
            answer = asked(url, catalogue.app.config.http.token, query, k)
        if answer is None:
            seen = [None] if words else []
            catalogue.refresh()
            answer = (catalogue.query_text([(query["name"], query["text"])], k)[0] if words
                      else answer_queries(catalogue.app.pipeline, catalogue.index,
                                          [(query["name"], query["data"])], k, seen)[0])
        st.session_state.answer, st.session_state.answer_key = (answer, seen[0]), key
    return st.session_state.answer


def prepared(pipeline: Pipeline, data: bytes) -> Prepared | None:
    try:
        return pipeline.prepare(data)
    except ImageError:
        return None


def what_the_steps_did(pipeline: Pipeline, seen: Prepared) -> str:
    if seen.removal == "none":
        removed = "transparency flattened onto white"
    elif seen.removal == PLAIN:
        removed = "plain background cut out by its colour"
    else:
        removed = f"background removed by {seen.removal.split('@')[0]}"
    return f"{removed}, padded to {pipeline.embedder.input_size} px"


def query_panel(catalogue: Catalogue) -> None:
    app = catalogue.app
    upload_column, words_column, k_column = st.columns([3, 2, 1])
    with upload_column:
        st.file_uploader("Upload a product photo", key="upload", on_change=use_upload,
                         args=(app.pipeline,))
    with words_column:
        reads_text = app.pipeline.reads_text
        st.text_input("Or describe it in words", key="words", on_change=use_words,
                      placeholder="red floral summer dress", disabled=not reads_text,
                      help=None if reads_text else NO_TEXT_TOWER)
    with k_column:
        k = st.number_input("Lookalikes", min_value=1, max_value=MAX_K, value=app.config.query.k)
    if problem := st.session_state.pop("query_problem", None):
        st.error(problem)
    query = st.session_state.get("query")
    if query is None:
        st.info("Upload a photo, describe it in words (with a CLIP embedder), or press **Find "
                "lookalikes** under a catalogue image below.")
        return
    answer, seen = answer_for(catalogue, query, k)
    query_column, results_column = st.columns([1, 4])
    with query_column:
        st.markdown("**Query**")
        if query["thumbnail"] is not None:
            st.image(query["thumbnail"], caption=query["name"], alt=f"query: {query['name']}",
                     width="stretch")
        elif query["text"] is not None:
            st.text(f"“{query['text']}”")  # as typed: no markdown of the user's
        if seen is not None:
            st.image(seen.square, alt="what the model saw", width="stretch",
                     caption=f"What the model saw: {what_the_steps_did(app.pipeline, seen)}")
    with results_column:
        if "error" in answer:
            st.error(f"{query['name']}: {answer['error']}")
            return
        st.markdown(f"**{len(answer['neighbours'])} lookalikes** among "
                    f"{answer['index_size']:,} images (rank · cosine similarity, path)")
        neighbours = answer["neighbours"]
        for start in range(0, len(neighbours), GRID_COLUMNS):
            for column, neighbour in zip(st.columns(GRID_COLUMNS),
                                         neighbours[start:start + GRID_COLUMNS], strict=False):
                with column:
                    rank, path = neighbour["rank"], neighbour["path"]
                    show_catalogue_image(app, path, alt=f"rank {rank}: {path}")
                    itself = " (the query itself)" if path == query["item"] else ""
                    st.markdown(f"**#{rank}** · {neighbour['similarity']:.3f}{itself}  \n"
                                f"`{path}`")


@st.fragment(run_every=REFRESH_SECONDS)
def status_panel(catalogue: Catalogue) -> None:
    app, report, url = catalogue.app, catalogue.status(), answering_service(catalogue)
    st.metric("Images indexed", f"{indexed_count(catalogue):,}")
    if url:
        st.markdown(f"**Answered by** the service at {url}")
    else:
        catalogue.refresh()
        st.markdown(f"**Answered by** this page's own index ({catalogue.index.size:,} "
                    "images): no service on this database answers HTTP")
    st.metric("Failed files", f"{report['failed']:,}")
    st.markdown(f"**Model** `{app.pipeline.model_id}`")
    others = sum(n for model, n in report["models"].items() if model != app.pipeline.model_id)
    if others:
        st.caption(f"{others:,} images were embedded by another model; the service re-embeds "
                   "them with this one.")
    st.markdown(f"**Last refresh** {report['last_refresh'] or 'never'}")
    live = [node for node in report["nodes"] if node["live"]]
    if not live:
        st.markdown("**Service** not running: new images are indexed by `lookalike run`")
    else:
        where = ", ".join(f"pid {node['pid']} on {node['host']}" for node in live)
        st.markdown(f"**Service** running ({where}), "
                    f"{sum(node['queue'] for node in live):,} file(s) waiting")
    st.caption(f"Checked at {datetime.now().strftime('%H:%M:%S')}, every {REFRESH_SECONDS} s")
    if report["failed"]:
        with st.expander(f"Failed files ({report['failed']:,})"):
            for path, error in catalogue.store.failures(limit=FAILURES_SHOWN):
                st.markdown(f"`{path}`: {error}")
            if report["failed"] > FAILURES_SHOWN:
                st.caption(f"the first {FAILURES_SHOWN} by path")


def indexed_count(catalogue: Catalogue) -> int:
    """Images indexed by this page's model (the store's counts: no index is loaded)."""
    return catalogue.store.tallies().counts.get(catalogue.model, {}).get("indexed", 0)


@st.fragment(run_every=REFRESH_SECONDS)
def catalogue_browser(catalogue: Catalogue) -> None:
    app, store = catalogue.app, catalogue.store
    filter_column, page_column = st.columns([4, 1])
    with filter_column:
        contains = st.text_input("Path contains", key="contains")
    total = (store.count_indexed(catalogue.model, contains) if contains
             else indexed_count(catalogue))
    pages = max(1, math.ceil(total / PAGE_SIZE))
    st.session_state.page = min(st.session_state.get("page", 1), pages)
    with page_column:
        page = st.number_input(f"Page (of {pages:,})", min_value=1, max_value=pages, key="page")
    paths = store.indexed_paths(catalogue.model, contains, (page - 1) * PAGE_SIZE, PAGE_SIZE)
    st.caption(f"{total:,} images" + (f" whose path contains “{contains}”" if contains else ""))
    for start in range(0, len(paths), GRID_COLUMNS):
        for column, path in zip(st.columns(GRID_COLUMNS), paths[start:start + GRID_COLUMNS],
                                strict=False):
            with column:
                show_catalogue_image(app, path, alt=path)
                st.caption(path)
                if st.button("Find lookalikes", key=f"find {path}"):
                    use_catalogue_item(app, path)
                    st.rerun()


def main() -> None:
    st.set_page_config(page_title="lookalike", layout="wide")
    try:
        catalogue = open_catalogue()
    except LookalikeError as exc:
        st.error(str(exc))
        st.stop()
    st.title("lookalike")
    with st.sidebar:
        st.header("Catalogue")
        st.caption(f"{catalogue.app.config.catalogue.images_dir}  \n"
                   f"config {os.environ.get(CONFIG_ENV)}")
        status_panel(catalogue)
    if indexed_count(catalogue) == 0:
        st.warning(f"{EMPTY_INDEX}: start the service (`lookalike run`) or run "
                   "`lookalike index`; this page picks the images up as they are indexed.")
    query_panel(catalogue)
    st.divider()
    st.subheader("Catalogue")
    catalogue_browser(catalogue)


main()
