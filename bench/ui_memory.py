"""The UI's memory while a running service answers for it, against the UI loading its own index.

Fills a SQLite store with N vectors under the config's model id, then starts `lookalike ui`
twice, opens it in headless Chromium, asks one photo and reads the UI process's resident memory
(VmRSS) once the answer is shown: first with no service running (the page loads its own copy
of the index), then with `lookalike run` answering HTTP on the same database (the page asks it).

    .venv/bin/python bench/ui_memory.py --config CONFIG [--sizes 100000]

CONFIG names the model files (tests' models: bench/RESULTS.md says how to make them).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from flood import workspace_from
from memory import fill, status_mb
from selenium.webdriver.common.by import By

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_ui import (  # noqa: E402
    UPLOADER,
    RunningUI,
    body_text,
    chromium,
    upload,
    wait_for,
)

from builders import cropped_query, product_photo  # noqa: E402
from lookalike.api.app import App  # noqa: E402
from running import RunningService, free_port  # noqa: E402

WAIT_SECONDS = 1800  # a million vectors load in minutes here


def ui_memory_mb(workspace, photo: Path, answered_by: str, profile: Path) -> float:
    """The UI process's VmRSS once it answered ``photo``, its sidebar saying ``answered_by``."""
    ui = RunningUI(workspace)
    driver = chromium(profile)
    try:
        driver.get(ui.url)
        wait_for(driver, lambda d: answered_by in body_text(d), answered_by, WAIT_SECONDS)
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, UPLOADER), "the uploader",
                 WAIT_SECONDS)
        upload(driver, photo)
        # The filled rows have no image files, so the answer shows ranks, not pictures.
        wait_for(driver, lambda d: "#1 · " in body_text(d), "an answer", WAIT_SECONDS)
        return status_mb("VmRSS", ui.process.pid)
    finally:
        driver.quit()
        ui.stop()


def measure(config: Path, size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        port = free_port()
        workspace = workspace_from(config, root / "workspace", remover="auto",
                                   http={"listen": f"127.0.0.1:{port}"})
        fill(f"sqlite:///{workspace.root / 'lookalike.db'}",
             App(str(workspace.config)).pipeline.model_id, size)
        photo = root / "shopper.jpg"
        cropped_query(product_photo(3)).save(photo)
        own = ui_memory_mb(workspace, photo, "Answered by this page's own index",
                           root / "chromium-own")
        service = RunningService(workspace, wait=False)
        try:
            service.wait_for(lambda: "answering HTTP" in service.log(), "HTTP", WAIT_SECONDS)
            asking = ui_memory_mb(workspace, photo, "Answered by the service at",
                                  root / "chromium-asking")
        finally:
            service.stop()
        print(f"N={size:,}: the UI with its own index {own:,.0f} MB, asking the service "
              f"{asking:,.0f} MB ({own - asking:,.0f} MB less)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--sizes", default="100000")
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        measure(args.config.resolve(), size)


if __name__ == "__main__":
    main()
