"""A soak: 10,000 small images dropped at once into a running service (tests/test_flood.py's
flood, forty times larger). Prints the ingest rate, memory growth, reader rounds and the SIGTERM
exit time.

Needs a config whose model files exist (--config); the flood runs in a temporary workspace
with that config's tables (remover "none").

    .venv/bin/python bench/flood.py --config CONFIG [--images 10000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_flood import flood, report, small_images  # noqa: E402

from builders import cropped_query, product_photo  # noqa: E402
from lookalike.cli.template import toml_value  # noqa: E402


def workspace_from(config: Path, root: Path, remover: str = "none",
                   **tables_added: dict) -> SimpleNamespace:
    """A workspace in ``root`` with ``config``'s tables (model paths absolute), ``remover``
    and ``tables_added``."""
    tables = tomllib.loads(config.read_text())
    tables.update(images_dir="images", inbox_dir="inbox", database="sqlite:///lookalike.db",
                  snapshot="feature_vectors.pkl", **tables_added)
    tables.setdefault("pipeline", {})["remover"] = remover
    lines = [f"{key} = {toml_value(value)}" for key, value in tables.items()
             if not isinstance(value, dict)]
    for name, table in tables.items():
        if isinstance(table, dict):
            lines += [f"[{name}]", *(f"{k} = {toml_value(v)}" for k, v in table.items())]
    root.mkdir(exist_ok=True)  # a kept one is used again (bench/http_api.py --keep)
    (root / "config.toml").write_text("\n".join(lines) + "\n")
    for folder in ("images", "inbox"):
        (root / folder).mkdir(exist_ok=True)
    return SimpleNamespace(root=root, config=root / "config.toml", images=root / "images",
                           inbox=root / "inbox")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--images", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        workspace = workspace_from(args.config.resolve(), root / "workspace")
        small_images(root / "staging", args.images)
        product_photo(6).save(workspace.images / "item06.jpg", quality=92)
        cropped_query(product_photo(6)).save(root / "query.jpg")
        figures = flood(workspace, root / "query.jpg", root / "staging", args.images,
                        reader_pause=15.0)
        print(report(args.images, figures))
        shutil.rmtree(root / "staging")


if __name__ == "__main__":
    main()
