"""Background removal: the fast path for plain backgrounds, against ground truth; "auto" and
the way each image took, as the store, status and eval report it."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from scenes import GUESS_KINDS, KINDS, PLAIN_KINDS, iou, real_cut_outs, scene
from test_pipeline import build, encode

from builders import product_photo
from lookalike.pipeline.builtins.plain_background import VERSION, PlainBackground

SCENES = 48  # of each kind; bench/removal.py measures hundreds
PLAIN = f"plain@{VERSION}"  # the fast path's way, as the store records it


@pytest.fixture(scope="module")
def cut_outs() -> dict[str, list[float | None]]:
    """For each background kind, the fast path's IoU on each scene (None: declined)."""
    plain = PlainBackground()
    found = {}
    for kind in KINDS:
        found[kind] = []
        for seed in range(SCENES):
            data, truth = scene(kind, seed)
            mask = plain.mask(Image.open(io.BytesIO(data)))
            found[kind].append(None if mask is None else iou(np.asarray(mask) >= 128, truth))
    return found


@pytest.mark.parametrize("kind", PLAIN_KINDS)
def test_plain_backgrounds_are_cut_out_as_the_true_mask(cut_outs, kind):
    taken = [value for value in cut_outs[kind] if value is not None]
    assert len(taken) >= 0.5 * SCENES  # white on white and the like go to the network
    assert np.mean(taken) >= 0.95 and np.percentile(taken, 10) >= 0.88


@pytest.mark.parametrize("kind", GUESS_KINDS)
def test_a_cut_that_would_be_a_guess_is_declined(cut_outs, kind):
    """A panel of the background's colour, an outline-only garment, fur, hair, leaves: declined,
    or cut as well as a plain garment (before: panels taken at IoU 0.63-0.72)."""
    taken = [value for value in cut_outs[kind] if value is not None]
    if taken:
        assert np.mean(taken) >= 0.95 and np.percentile(taken, 10) >= 0.88, taken


def test_real_cut_outs_are_declined_or_cut_as_the_network_cut_them():
    """Fur, hair, cars and a small pale succulent, cut out of real photos by rembg, on white and
    light grey: the fast path's cut against the network's own."""
    plain = PlainBackground()
    photos = real_cut_outs()
    taken = {}
    for name, data, truth in photos:
        mask = plain.mask(Image.open(io.BytesIO(data)))
        if mask is not None:
            taken[name] = iou(np.asarray(mask) >= 128, truth)
    assert len(taken) >= len(photos) / 2
    assert np.mean(list(taken.values())) >= 0.95 and min(taken.values()) >= 0.9, taken


def test_textured_backgrounds_are_declined(cut_outs):
    assert cut_outs["textured"] == [None] * SCENES


def test_a_photo_of_nothing_is_declined():
    assert PlainBackground().mask(Image.new("RGB", (300, 400), (250, 250, 250))) is None


def test_auto_cuts_a_studio_photo_itself_and_hands_a_street_photo_to_rembg(model_home,
                                                                            tmp_path):
    pipeline = build(model_home, tmp_path, pipeline={"remover": "auto"},
                     auto={"model_path": str(model_home / "rembg" / "custom" / "mask.onnx")})
    network = pipeline.remover.network.id
    assert pipeline.remover.id == f"auto:{PLAIN}|{network}" and network.startswith("rembg-")
    assert pipeline.model_id != build(model_home, tmp_path).model_id  # never mixed with rembg's
    studio = pipeline.prepare(encode(product_photo(2)))
    assert studio.removal == PLAIN
    assert studio.square.getpixel((3, 3)) == (255, 255, 255)
    street, _ = scene("textured", 0)
    assert pipeline.prepare(street).removal == network
    transparent = Image.new("RGBA", (200, 240), (0, 0, 0, 0))
    transparent.paste((200, 30, 40, 255), (50, 60, 150, 200))
    assert pipeline.prepare(encode(transparent)).removal == PLAIN


def test_status_and_eval_count_the_images_of_each_way(workspace, run_cli):
    for seed in range(3):
        product_photo(seed).save(workspace.images / f"studio{seed}.jpg")
    for seed in range(2):
        (workspace.images / f"street{seed}.jpg").write_bytes(scene("textured", seed)[0])
    assert "5 embedded" in run_cli("index").output
    report = json.loads(run_cli("status", "--json").output)
    network = next(way for way in report["removals"] if way != PLAIN)
    assert report["removals"] == {PLAIN: 3, network: 2} and network.startswith("rembg-")
    assert f"removed by:   {PLAIN} 3, {network} 2" in run_cli("status").output

    folder = workspace.root / "labelled"
    for category, names in (("studio", ["studio0.jpg", "studio1.jpg"]),
                            ("street", ["street0.jpg", "street1.jpg"])):
        (folder / category).mkdir(parents=True)
        for name in names:
            (folder / category / name).write_bytes((workspace.images / name).read_bytes())
    evaluation = json.loads(run_cli("eval", str(folder), "-k", "1", "--json").output)
    assert evaluation["removals"] == {PLAIN: 2, network: 2}


def test_an_int8_network_is_made_from_the_users_photos_and_runs_under_its_own_id(
        workspace, run_cli, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for seed in range(3):
        product_photo(seed).save(workspace.images / f"studio{seed}.jpg")
    for seed in range(2):
        (workspace.images / f"street{seed}.jpg").write_bytes(scene("textured", seed)[0])
    workspace.write_config(auto={"int8": True})
    result = run_cli("index")
    assert result.exit_code == 1
    assert "int8 copy of rembg model u2net_custom is not made yet" in result.output
    assert "run `lookalike quantize`" in result.output and len(result.output.splitlines()) == 1

    result = run_cli("quantize")
    assert result.exit_code == 0, result.output
    made = next((tmp_path / "cache" / "lookalike" / "models").glob("u2net_custom-int8-*.onnx"))
    assert f"written to {made}, calibrated on 5 photos" in result.output
    assert "5 embedded" in run_cli("index").output
    removals = json.loads(run_cli("status", "--json").output)["removals"]
    int8 = next(way for way in removals if way != PLAIN)
    assert removals == {PLAIN: 3, int8: 2} and int8.startswith("rembg-u2net_custom-int8@")


def test_an_int8_resnet18_is_made_by_quantize_and_runs_under_its_own_id(
        workspace, run_cli, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for seed in range(4):
        product_photo(seed).save(workspace.images / f"studio{seed}.jpg")
    workspace.write_config(pipeline={"remover": "none"})
    result = run_cli("quantize", "--only", "remover")
    assert result.exit_code == 1 and "no network to quantize (remover none)" in result.output
    result = run_cli("quantize")  # the one network there is: the embedder's
    assert result.exit_code == 0, result.output
    made = next((tmp_path / "cache" / "lookalike").glob("resnet18-int8-*.onnx"))
    assert result.output.splitlines() == [
        f"int8 copy of ResNet-18 written to {made}, calibrated on 4 photos; set int8 = true "
        "in [resnet18] to use it"]
    workspace.write_config(pipeline={"remover": "none"}, resnet18={"int8": True})
    assert "4 embedded" in run_cli("index").output
    [model] = json.loads(run_cli("status", "--json").output)["models"]
    assert "+resnet18-int8@" in model


def test_quantize_needs_photos(workspace, run_cli):
    product_photo(0).save(workspace.images / "only.jpg")
    result = run_cli("quantize")
    assert result.exit_code == 1
    assert "has 1 readable photos: calibration needs at least 4" in result.output
