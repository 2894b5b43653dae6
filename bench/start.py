"""Start-up: seconds from `lookalike run` to its "watching" log line, on an existing workspace.

Each round starts the service on the workspace's config.toml (the environment inherited, so
REMBG_HOME and XDG_CACHE_HOME apply), waits for "watching" in its log, stops it with SIGTERM
and waits for it to exit; prints each round, the service's own index line, and the median.

    .venv/bin/python bench/start.py --workspace DIR [--rounds 3]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIMEOUT = 600
LOOKALIKE = Path(sys.executable).with_name("lookalike")  # the venv's command


def one_start(workspace: Path) -> tuple[float, str]:
    """Seconds to "watching", and the log line saying how the index was made."""
    with tempfile.TemporaryFile("w+") as log:
        started = time.perf_counter()
        service = subprocess.Popen([str(LOOKALIKE), "run"], cwd=workspace, stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            while True:
                log.seek(0)
                text = log.read()
                if "watching" in text:
                    seconds = time.perf_counter() - started
                    break
                if service.poll() is not None or time.perf_counter() - started > TIMEOUT:
                    raise SystemExit(f"the service did not start:\n{text[-2000:]}")
                time.sleep(0.05)
        finally:
            service.send_signal(signal.SIGTERM)
            service.wait(timeout=TIMEOUT)
    index = next((line.split(": ", 1)[1] for line in text.splitlines()
                  if "index restored" in line or "index loaded" in line), "")
    return seconds, index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times = []
    for round_number in range(1, args.rounds + 1):
        seconds, index = one_start(args.workspace)
        times.append(seconds)
        print(f"round {round_number}: watching after {seconds:.1f} s ({index})", flush=True)
    print(f"median {statistics.median(times):.1f} s over {args.rounds} rounds")


if __name__ == "__main__":
    main()
