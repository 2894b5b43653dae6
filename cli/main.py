"""The ``lookalike`` command: thin click commands over the pipeline, store and daemon."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

import click

from lookalike.base.errors import ConfigError, ImageError, LookalikeError
from lookalike.search.settings import MAX_K


class LookalikeGroup(click.Group):
    """Turns user errors into one line on stderr and exit status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LookalikeError as exc:
            raise click.ClickException(" ".join(str(exc).split())) from None
        except Terminated:
            raise SystemExit(128 + signal.SIGTERM) from None


def load_app(config_option: str | None, offline: bool = False):
    """The command's App; imported here so that --help does not load SQLAlchemy."""
    from lookalike.api.app import App

    return App(config_option, offline)


def config_option(command):
    return click.option(
        "--config",
        "config_option",
        type=click.Path(dir_okay=False),
        help="config.toml to use (default: $LOOKALIKE_CONFIG, else ./config.toml).",
    )(command)


def offline_option(command):
    return click.option("--offline", is_flag=True,
                        help="Never fetch a missing model file ([models] fetch = false).")(command)


def progress_bar(total: int, label: str):
    """A progress bar on stderr, drawn only when stderr is a terminal."""
    return click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True,
                             hidden=not sys.stderr.isatty())


class BacklogBar:
    """The service's start-up backlog as a progress bar, on a terminal only."""

    def __init__(self):
        self._bar = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = progress_bar(total, "reconciling")
            self._bar.render_progress()
        self._bar.update(done - self._bar.pos)
        if done == total:
            self._bar.render_finish()


def json_option(command):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(command)


def k_option(default: int | None, help: str):
    return click.option("-k", type=click.IntRange(1, MAX_K), default=default,
                        show_default=default is not None, help=help)


@click.group(cls=LookalikeGroup)
@click.version_option(package_name="lookalike")
def cli():
    """Visual similarity search for fashion product images."""
    from lookalike.cli.logs import setup_logging

    setup_logging(logging.WARNING)  # run logs more; a model fetch is always told
    # SIGTERM unwinds like Ctrl-C: a file being written (a model fetch) is removed, a
    # transaction rolled back. `run` catches it to finish its step instead.
    signal.signal(signal.SIGTERM, _terminated)


class Terminated(BaseException):
    """SIGTERM, raised where the main thread is, to unwind like Ctrl-C."""


def _terminated(_signum, _frame):
    raise Terminated


@cli.command()
@click.argument("folder", default=".", type=click.Path(file_okay=False))
def init(folder):
    """Write a commented config.toml and the images/ and inbox/ folders into FOLDER (default:
    here), to start lookalike anywhere; an existing config.toml is never overwritten."""
    from lookalike.cli.template import config_template
    from lookalike.pipeline.plugins import collect_steps, plugin_manager

    folder = Path(folder)
    config = folder / "config.toml"
    template = config_template(collect_steps(plugin_manager())).encode()
    folders = [folder / "images", folder / "inbox"]
    for path in folders:  # checked before anything is written
        if path.exists() and not path.is_dir():
            raise LookalikeError(f"{path} exists and is not a folder; nothing was changed")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(config, "xb") as f:  # x: refuses an existing file, even one made meanwhile
            f.write(template)
    except FileExistsError:
        raise LookalikeError(f"{config} exists already; nothing was changed") from None
    except OSError as exc:
        raise LookalikeError(f"cannot write {config}: {exc.strerror}") from None
    try:
        for path in folders:
            path.mkdir(exist_ok=True)
    except OSError as exc:
        raise LookalikeError(f"cannot make {exc.filename}: {exc.strerror}") from None
    click.echo(f"wrote {config}, {folder / 'images'} and {folder / 'inbox'}: put product photos "
               f"in images/, then run `lookalike run` there (models are fetched on first use)")


@cli.command()
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              help="Log lines on stderr as text, or as JSON objects for log shippers.")
@offline_option
@config_option
def run(log_format, offline, config_option):
    """Run the service: index images_dir as it changes, answer images dropped into inbox_dir."""
    from lookalike.cli.logs import setup_logging
    from lookalike.daemon.service import Service
    from lookalike.store.store import StoreUnreachable

    setup_logging(log_format=log_format)
    app = load_app(config_option, offline)
    config = app.config
    refusal = config.http.refusal()
    if refusal:
        raise ConfigError(f"{config.path}: {refusal}")
    empty_index = app.vector_index()
    stop = threading.Event()  # set by a signal: while waiting for the database, or running
    with app.locked("run"):
        try:
            app.pipeline.warm_up()  # a fetch SIGTERM stops leaves nothing behind
        except Terminated:  # a stop asked for while starting is a stop
            logging.getLogger(__name__).info("stopped while loading the models")
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        try:
            with app.opened_store(stop) as store, app.node(store, "run") as node:
                service = Service(config.catalogue, config.daemon, config.query.k, store,
                                  app.pipeline, empty_index, node, on_backlog=BacklogBar(),
                                  stop=stop)
                logging.getLogger(__name__).info("running with model %s",
                                                 app.pipeline.model_id)
                service.run(beside=http_server(app, store, node) if config.http.listen
                            else None)
        except StoreUnreachable:
            if not stop.is_set():
                raise
            logging.getLogger(__name__).info("stopped before the database could be reached")


def http_server(app, store, node):
    """The HTTP API beside a started service, over its own index and models."""
    from lookalike.api.catalogue import Catalogue
    from lookalike.web.metrics import Metrics
    from lookalike.web.server import serving

    def beside(service):
        catalogue = Catalogue(app, store, service.index)
        metrics = Metrics(catalogue, service.status, service.waiting)
        return serving(catalogue, app.config.http, metrics, service.stalled, node.answers_http)

    return beside


@cli.command()
@click.option("--allow-mass-removal", is_flag=True,
              help="Forget missing images even when they are more than "
                   "[daemon] max_removal_fraction of the catalogue.")
@offline_option
@config_option
def index(allow_mass_removal, offline, config_option):
    """Index images_dir once (new, changed and deleted files), refresh the snapshot, exit.
    Alongside services on a shared database it is one more node (the snapshot is then left
    to the service that writes it)."""
    from lookalike.daemon.ingest import ingest
    from lookalike.daemon.reconcile import differences
    from lookalike.daemon.root import take_root
    from lookalike.store.leader import SnapshotLeader
    from lookalike.store.schema import HELD_BACK
    from lookalike.store.snapshot import publish_snapshot

    app = load_app(config_option, offline)
    config = app.config
    app.check_snapshot_folder()
    snapshot = config.catalogue.snapshot
    with app.locked("index"), app.opened_store() as store, app.node(store, "index") as node:
        pipeline = app.pipeline
        take_root(store, config.catalogue.images_dir)
        found = differences(store, config.catalogue.images_dir, pipeline,
                            config.daemon.max_removal_fraction, allow_mass_removal)
        with progress_bar(len(found.paths), "indexing") as bar:
            report = ingest(store, pipeline, config.catalogue.images_dir, node, found.paths,
                            config.daemon.batch_size, on_progress=bar.update)
        report.unchanged += found.current
        leader = SnapshotLeader(node.claims)
        try:
            written = leader.holds()
            if written:
                publish_snapshot(store, pipeline.model_id, snapshot)
        except OSError as exc:
            raise LookalikeError(f"cannot write snapshot {snapshot}: {exc.strerror}") from None
        finally:
            leader.release()
        size = store.count_indexed(pipeline.model_id)
        held_back = store.get_meta(HELD_BACK)
    click.echo(f"{report}; index holds {size} images"
               + ("" if written else "; the snapshot is written by a running service"))
    if held_back:
        click.echo(f"Warning: removals held back: {held_back}", err=True)


@cli.command()
@click.argument("images", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--similar", is_flag=True,
              help="IMAGES are catalogue paths (under images_dir): answer from their stored "
                   "vectors, without loading a model; each image itself is left out.")
@click.option("--text", "texts", multiple=True, metavar="WORDS",
              help="Search by words (\"red floral dress\"), with a CLIP embedder; repeat for "
                   "several. Nothing is stored.")
@k_option(None, "How many neighbours (default: [query] k).")
@json_option
@offline_option
@config_option
def query(images, similar, texts, k, as_json, offline, config_option):
    """Find the catalogue images that look most like each IMAGE, or match each --text
    (--json: the inbox's JSON)."""
    from lookalike.api.catalogue import Catalogue
    from lookalike.base.files import stored_name
    from lookalike.search.query import EMPTY_INDEX

    if bool(images) == bool(texts) or (similar and texts):
        raise click.UsageError("give IMAGES, or --text WORDS, not both")
    # One query scans every vector once: cheaper than building an approximate index.
    with Catalogue.opened(config_option, offline, index_name="exact") as catalogue:
        if similar:
            answers = catalogue.similar(images, k)
        else:
            queries = []
            for image in images:
                try:
                    queries.append((stored_name(Path(image).name),
                                    catalogue.app.pipeline.read_file(Path(image))))
                except ImageError as exc:
                    raise LookalikeError(f"{stored_name(image)}: {exc}") from None
            if catalogue.index.size == 0:
                raise LookalikeError(f"{EMPTY_INDEX}: run `lookalike index` or the service")
            answers = (catalogue.query_text([(text, text) for text in texts], k) if texts
                       else catalogue.query(queries, k))
    names = [stored_name(image) for image in images] or [f'"{text}"' for text in texts]
    for name, answer in zip(names, answers, strict=True):
        if "error" in answer:
            raise LookalikeError(f"{name}: {answer['error']}")
    if as_json:
        click.echo(json.dumps(answers[0] if len(answers) == 1 else answers, indent=2))
        return
    for answer in answers:
        click.echo(f"{answer['query']}  ({answer['index_size']} images, model {answer['model']})")
        click.echo(f"{'rank':>4}  {'similarity':>10}  path")
        for neighbour in answer["neighbours"]:
            click.echo(
                f"{neighbour['rank']:>4}  {neighbour['similarity']:>10.4f}  {neighbour['path']}"
            )


@cli.command()
@click.option("--port", type=click.IntRange(1, 65535), default=8501, show_default=True,
              help="Port on 127.0.0.1 to serve the interface on.")
@offline_option
@config_option
def ui(port, offline, config_option):
    """Serve the visual interface on http://127.0.0.1:PORT (query by photo or catalogue item)."""
    import os
    import socket
    import sys

    from lookalike.api.config import CONFIG_ENV

    app = load_app(config_option, offline)
    for model_file in app.pipeline.model_files():
        model_file.required(f"{model_file.step} model file")
    with socket.socket() as probe:  # Streamlit's own message for this is easy to miss
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise click.ClickException(
                f"cannot serve on 127.0.0.1:{port}: {exc.strerror}; choose another --port"
            ) from None
    click.echo(f"lookalike ui: http://127.0.0.1:{port} (Ctrl-C stops it)", err=True)
    # Streamlit takes over this process: its server handles the signals and the browser tabs.
    os.execve(sys.executable, [
        sys.executable, "-m", "streamlit", "run", str(Path(__file__).with_name("ui.py")),
        "--server.address=127.0.0.1", f"--server.port={port}", "--server.headless=true",
        "--server.fileWatcherType=none", "--browser.gatherUsageStats=false",
        "--client.toolbarMode=viewer",
    ], {**os.environ, CONFIG_ENV: str(app.config.path)})


@cli.command("eval")
@click.argument("folder", type=click.Path(file_okay=False))
@k_option(10, "Neighbours per query.")
@json_option
@offline_option
@config_option
def evaluate(folder, k, as_json, offline, config_option):
    """Precision@k of the configured pipeline on FOLDER, whose sub-folders are categories.

    Each image is queried against all the others (leave-one-out); a neighbour is a hit when it
    comes from the same sub-folder. Nothing is written to the store.
    """

    from lookalike.search.evaluate import categorised_images, evaluate_folder

    app = load_app(config_option, offline)
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise click.ClickException(f"{folder} is not a folder")
    total = len(categorised_images(folder))
    with progress_bar(total, "embedding") as bar:
        result = evaluate_folder(app.pipeline, folder, k, app.config.daemon.batch_size, bar.update)
    if as_json:
        click.echo(json.dumps({
            "k": result.k, "images": result.images, "precision": result.overall,
            "categories": {c: {"images": result.sizes[c], "precision": p}
                           for c, p in result.per_category.items()},
            "failed": [{"path": path, "error": error} for path, error in result.failed],
            "removals": result.removals,
        }, indent=2))
        return
    click.echo(f"precision@{result.k}: {result.overall:.4f} over {result.images} images")
    for category, precision in result.per_category.items():
        click.echo(f"  {category:<24} {precision:.4f}  ({result.sizes[category]} images)")
    click.echo(f"background removed by: {removal_summary(result.removals)}")
    for path, error in result.failed:
        click.echo(f"  skipped {path}: {error}")


@cli.command()
@json_option
@config_option
def status(as_json, config_option):
    """Counts of indexed and failed images, how their backgrounds were removed, index size,
    last refresh, and every node (service) working on the database."""
    report = load_app(config_option).status()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"database:     {report['database']}")
    click.echo(f"indexed:      {report['indexed']}")
    click.echo(f"failed:       {report['failed']}")
    for model, count in report["models"].items():
        click.echo(f"model:        {model} ({count} images)")
    if report["removals"]:
        click.echo(f"removed by:   {removal_summary(report['removals'])}")
    click.echo(f"index size:   {report['index_size']}")
    click.echo(f"last refresh: {report['last_refresh'] or 'never'}")
    if report["removals_held_back"]:
        click.echo(f"held back:    {report['removals_held_back']}")
    live = [node for node in report["nodes"] if node["live"]]
    if not live:
        click.echo("service:      not running")
    for node in report["nodes"]:
        state = "running" if node["live"] else "GONE (not heard from)"
        click.echo(f"node:         lookalike {node['command']} on {node['host']} (pid "
                   f"{node['pid']}) {state}, since {node['since']}, last heartbeat "
                   f"{node['heartbeat']}")
        click.echo(f"              queue {node['queue']} file(s), embedded {node['embedded']}, "
                   f"last problem: {node['last_problem'] or 'none'}")
        if node["http"]:
            click.echo(f"              answers HTTP on {node['http']}")
        if node["onnx_providers"]:
            click.echo(f"              ONNX models run on {node['onnx_providers']}")


def removal_summary(removals: dict[str, int]) -> str:
    """How many images took each way of removing the background, most first."""
    return ", ".join(f"{way or 'not recorded'} {count}" for way, count in removals.items())


@cli.command()
@json_option
def plugins(as_json):
    """List every installed step and index: its kind, name, source and options (defaults)."""
    from lookalike.pipeline.plugins import collect_steps, plugin_manager

    steps = collect_steps(plugin_manager())
    rows = [{"kind": kind, "name": name, "source": plugin.source, "options": plugin.options}
            for kind, named in steps.items() for name, plugin in sorted(named.items())]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        options = ", ".join(f"{key} = {json.dumps(value)}" for key, value in row["options"].items())
        click.echo(f"{row['kind']:<9} {row['name']:<12} {row['source']}")
        if options:
            click.echo(f"{'':<22} [{row['name']}] {options}")


@cli.command()
@click.option("--photos", "count", default=32, show_default=True, type=click.IntRange(4, 1000),
              help="Calibrate on this many photos of images_dir (spread over it).")
@click.option("--only", type=click.Choice(["remover", "embedder"]),
              help="Make only this step's copy (default: each network that has one).")
@offline_option
@config_option
def quantize(count, only, offline, config_option):
    """Make int8 copies of the networks, each calibrated on photos from images_dir as it sees
    them: the background remover's (the u2net family) and ResNet-18's. With `int8 = true` in
    the network's table ([auto] or [rembg], [resnet18]) its copy runs instead of the float32
    network: faster, its own model id (everything is re-embedded)."""
    app = load_app(config_option, offline)
    pipeline = app.pipeline
    network = getattr(pipeline.remover, "network", pipeline.remover)
    steps = {"remover": network, "embedder": pipeline.embedder}
    chosen = {step: steps[step] for step in ([only] if only else steps)
              if hasattr(steps[step], "quantize")}
    if not chosen:
        names = {"remover": app.config.pipeline.remover, "embedder": app.config.pipeline.embedder}
        asked = ", ".join(f"{step} {names[step]}" for step in ([only] if only else steps))
        raise click.ClickException(f"no network to quantize ({asked})")
    photos = calibration_photos(app, count)
    if "remover" in chosen:
        path = network.quantize([pipeline.decode(data, 320) for data in photos])
        click.echo(f"int8 copy of {network.name} written to {path}, calibrated on "
                   f"{len(photos)} photos; set int8 = true in that table to use it")
    if "embedder" in chosen:  # after the remover's: the photos are prepared as configured
        path = pipeline.embedder.quantize([pipeline.prepare(data).square for data in photos])
        click.echo(f"int8 copy of ResNet-18 written to {path}, calibrated on {len(photos)} "
                   "photos; set int8 = true in [resnet18] to use it")


def calibration_photos(app, count: int) -> list[bytes]:
    """Up to ``count`` readable photos spread over images_dir (their bytes); at least 4."""
    from lookalike.base.files import file_path, scan

    folder = app.config.catalogue.images_dir
    if not folder.is_dir():
        raise click.ClickException(f"images_dir {folder} does not exist")
    paths = sorted(scan(folder).files)
    photos = []
    for path in paths[::max(1, len(paths) // count)]:
        try:
            data = app.pipeline.read_file(file_path(folder, path))
            app.pipeline.decode(data, 32)  # readable as an image
        except ImageError:
            continue
        photos.append(data)
        if len(photos) == count:
            break
    if len(photos) < 4:
        raise click.ClickException(f"images_dir {folder} has {len(photos)} readable photos: "
                                   "calibration needs at least 4")
    return photos


@cli.command()
@click.option("--fetch", is_flag=True, help="Fetch every missing file now (verified).")
@click.option("--to", "folder", type=click.Path(file_okay=False),
              help="With --fetch: put the files in this folder, for [models] dir elsewhere.")
@json_option
@offline_option
@config_option
def models(fetch, folder, as_json, offline, config_option):
    """List the model files the configured pipeline needs; exit 1 when one is missing.

    Each file: where it is loaded from, whether it is there, its sha256, whether that matches
    the digest lookalike pins for it, and where it is fetched from; then what ONNX Runtime
    runs the ONNX models on ([onnxruntime] providers)."""
    from lookalike.models.fetch import copy_verified, source_url
    from lookalike.models.files import shown_url

    if folder and not fetch:
        raise click.UsageError("--to needs --fetch")
    app = load_app(config_option, offline)
    pipeline = app.pipeline
    files = pipeline.model_files()
    providers = app.config.onnxruntime.chosen()
    # The steps whose model files ONNX Runtime runs (the others' run on torch, or a plugin's own).
    onnx_steps = {file.step for step in (pipeline.remover, pipeline.embedder)
                  if getattr(step, "runs_onnx", False) for file in step.model_files()}
    if fetch:
        for file in files:
            if folder:
                copy_verified(file, Path(folder) / file.path.name)
            else:
                file.required(f"{file.step} model file")
        if folder:
            files = [replace(file, path=Path(folder) / file.path.name) for file in files]
    rows = [
        {
            "step": f.step,
            "path": str(f.path),
            "present": f.present,
            "sha256": f.sha256() if f.present else None,
            "pin": f.pin,
            "matches_pin": f.matches_pin() if f.present else None,
            "source": shown_url(source_url(f)) if f.url else None,
            "how_to_supply": None if f.present else f.how_to_supply,
            "runs_on": providers if f.step in onnx_steps else None,
        }
        for f in files
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for row in rows:
            state = row["sha256"] if row["present"] else f"MISSING: {row['how_to_supply']}"
            if row["matches_pin"] is False:
                state += f" DOES NOT MATCH {row['pin']}"
            source = f"\n           from {row['source']}" if row["source"] else ""
            click.echo(f"{row['step']:<10} {row['path']}\n           {state}{source}")
        click.echo(f"ONNX models run on: {', '.join(providers)}")
    if not all(row["present"] and row["matches_pin"] is not False for row in rows):
        raise SystemExit(1)
