"""`lookalike index` against the original system's per-image loop, whole processes, same files.

The original design as a plain loop (ORIGINAL below): for each file, Pillow decode, white pad
to a square, resize to 224, normalise, one ResNet-18 forward pass in torch, the vector into
SQLite, then a pickle of all vectors. Beside it, `lookalike index` on a fresh workspace with the
same files and weights: once as configured (float32, ONNX Runtime) and, with --int8, with the
int8 copy that `lookalike quantize --only embedder` calibrates on those photos (made before the
timing, not counted), after one untimed round. Each run is a whole process (start-up, imports,
model load included), timed by wall clock; the runs alternate, --rounds times, so each sees the
same moments of a shared machine. Background removal is off in all of them (remover "none"): it
is the same network in both systems, and this measures the rest.

    .venv/bin/python bench/index_vs_loop.py --config CONFIG [--images 400] [--rounds 2] [--int8]

CONFIG names the model files ([resnet18] weights: a state dict path).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from flood import workspace_from

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from builders import marked_photo  # noqa: E402

ORIGINAL = """
import pickle, sqlite3, sys
from pathlib import Path
import numpy as np, torch
from PIL import Image
from torchvision import transforms
from torchvision.models import resnet18

folder, weights, database = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
model = resnet18(weights=None)
model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=False)
model.fc = torch.nn.Identity()
model.eval()
to_tensor = transforms.Compose([
    transforms.Resize((224, 224)), transforms.ToTensor(),
    transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
db = sqlite3.connect(database)
db.execute("CREATE TABLE vectors (path TEXT PRIMARY KEY, vector BLOB)")
vectors = {}
for path in sorted(folder.iterdir()):
    image = Image.open(path).convert("RGB")
    side = max(image.size)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    with torch.no_grad():
        vector = model(to_tensor(square).unsqueeze(0))[0].numpy()
    vector /= np.linalg.norm(vector)
    db.execute("INSERT INTO vectors VALUES (?, ?)", (path.name, vector.tobytes()))
    db.commit()
    vectors[path.name] = vector
Path(database).with_suffix(".pkl").write_bytes(pickle.dumps(vectors))
print(len(vectors))
"""


def timed(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"{command[:3]} failed:\n{done.stdout}{done.stderr}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--int8", action="store_true")
    args = parser.parse_args()
    embedder = tomllib.loads(args.config.read_text())["resnet18"]
    lookalike = str(Path(sys.executable).with_name("lookalike"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        photos = root / "photos"
        photos.mkdir()
        for number in range(args.images):
            marked_photo(number, size=(800, 1200)).save(photos / f"{number:05d}.jpg",
                                                         quality=90)
        variants = {"float32": workspace_from(args.config.resolve(), root / "float32")}
        if args.int8:
            variants["int8"] = workspace_from(args.config.resolve(), root / "int8",
                                              resnet18={**embedder, "int8": True})
        for workspace in variants.values():  # the same files, copied once
            shutil.copytree(photos, workspace.images, dirs_exist_ok=True)
        if args.int8:
            timed([lookalike, "quantize", "--only", "embedder", "--photos", "64",
                   "--config", str(variants["int8"].config)])
        times: dict[str, list[float]] = {"original loop": [], **{name: [] for name in variants}}
        # A first round untimed: the ONNX export made once, the files in the page cache.
        for round_number in range(args.rounds + 1):
            database = root / "original.db"
            database.unlink(missing_ok=True)
            seconds, out = timed([sys.executable, "-c", ORIGINAL, str(photos), embedder["weights"],
                                  str(database)])
            assert int(out) == args.images, out
            if round_number:
                times["original loop"].append(seconds)
            for name, workspace in variants.items():
                for made in ("lookalike.db", "feature_vectors.pkl", "feature_vectors.npy",
                             "feature_vectors.json"):
                    (workspace.root / made).unlink(missing_ok=True)
                seconds, out = timed([lookalike, "index", "--config", str(workspace.config)])
                assert f"{args.images} embedded" in out, out
                if round_number:
                    times[name].append(seconds)
    print(f"{os.cpu_count()} cores, {args.images} photos of 800x1200, remover none, "
          f"{args.rounds} rounds alternating, whole processes")
    loop = statistics.median(times["original loop"])
    for name, seconds in times.items():
        median = statistics.median(seconds)
        runs = ", ".join(f"{s:.1f}" for s in seconds)
        print(f"{name:<14} {median:6.1f} s  ({args.images / median:5.1f} images/s; runs {runs})"
              + ("" if name == "original loop" else f"   {loop / median:.2f}x the loop"))


if __name__ == "__main__":
    main()
