"""The built-in steps, through the real Pillow, rembg and torchvision code paths."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from builders import cropped_query, product_photo, write_resnet18_state_dict
from lookalike.base.errors import ConfigError, ImageError, LookalikeError, ModelMissingError
from lookalike.models.files import ModelSource
from lookalike.models.onnx import OnnxRuntime
from lookalike.pipeline.pipeline import Pipeline
from lookalike.pipeline.plugins import collect_steps, plugin_manager
from lookalike.pipeline.settings import PipelineSteps

DEFAULT_STEPS = PipelineSteps(remover="rembg")


def build(model_home, tmp_path, **tables) -> Pipeline:
    chosen = replace(DEFAULT_STEPS, **tables.pop("pipeline", {}))
    defaults = {
        "rembg": {"model_path": str(model_home / "rembg" / "custom" / "mask.onnx")},
        "resnet18": {"weights": str(model_home / "resnet18-test.pth")},
    }
    for name, table in tables.items():
        defaults[name] = {**defaults.get(name, {}), **table}
    return Pipeline.build(collect_steps(plugin_manager()), chosen, defaults, tmp_path,
                          ModelSource(fetch=False), OnnxRuntime())


def encode(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def test_decoder_applies_exif_orientation():
    from lookalike.pipeline.builtins.pillow_decoder import PillowDecoder

    image = Image.new("RGB", (40, 20), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    decoder = PillowDecoder(max_pixels=10**8, max_file_bytes=10**8)
    decoded = decoder.decode(encode(image, "JPEG", exif=exif), 224)
    assert decoded.size == (20, 40)


def test_decoder_rejects_bytes_that_are_not_an_image():
    from lookalike.pipeline.builtins.pillow_decoder import PillowDecoder

    with pytest.raises(ImageError, match="not an image"):
        PillowDecoder(max_pixels=10**8, max_file_bytes=10**8).decode(b"not a photo", 224)


def test_transparent_background_becomes_white_and_image_is_padded_square(model_home, tmp_path):
    pipeline = build(model_home, tmp_path, pipeline={"remover": "none"})
    image = Image.new("RGBA", (100, 50), (0, 0, 0, 0))
    image.paste((10, 120, 10, 255), (40, 10, 60, 40))
    prepared = pipeline.prepare(encode(image))
    square = prepared.square
    assert prepared.size == (100, 50) and prepared.removal == "none"
    assert square.size == (224, 224) and square.mode == "RGB"
    assert square.getpixel((5, 5)) == (255, 255, 255)  # padding and former transparency
    assert square.getpixel((112, 112))[1] > 100  # the garment stays, centred


def test_rembg_replaces_the_background_with_white(model_home, tmp_path):
    pipeline = build(model_home, tmp_path)
    photo = Image.new("RGB", (200, 200), (200, 220, 255))
    photo.paste((30, 30, 30), (60, 60, 140, 140))
    cutout = pipeline.remover.remove(photo)
    assert min(cutout.getpixel((5, 5))) > 235  # the pale blue backdrop is gone
    assert max(cutout.getpixel((100, 100))) < 60  # the dark garment is kept


def test_resnet18_gives_unit_vectors_of_512_and_a_digest_model_id(model_home, tmp_path):
    pipeline = build(model_home, tmp_path, pipeline={"remover": "none"})
    images = [pipeline.prepare(encode(Image.new("RGB", (64, 80), colour))).square
              for colour in ("red", "navy")]
    vectors = pipeline.embed(images)
    assert vectors.shape == (2, 512) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert pipeline.embedder.id.startswith("resnet18@")
    assert pipeline.model_id == f"pillow@2+none+white@2+{pipeline.embedder.id}"


def test_missing_imagenet_weights_name_the_file_and_how_to_supply_it(model_home, tmp_path):
    pipeline = build(model_home, tmp_path, resnet18={"weights": "imagenet"})
    with pytest.raises(ModelMissingError) as error:
        pipeline.warm_up()
    message = str(error.value)
    assert "resnet18-f37072fd.pth" in message and str(model_home / "torch") in message
    assert "\n" not in message


def test_weights_that_are_not_a_resnet18_state_dict_are_refused(model_home, tmp_path):
    import torch

    bogus = tmp_path / "other.pth"
    torch.save({"layer.weight": torch.zeros(3)}, bogus)
    pipeline = build(model_home, tmp_path, resnet18={"weights": str(bogus)})
    with pytest.raises(LookalikeError, match="not a ResNet-18 state dict"):
        pipeline.warm_up()


def test_missing_rembg_model_names_the_expected_path(model_home, tmp_path):
    pipeline = build(model_home, tmp_path, rembg={"model": "u2net", "model_path": ""})
    with pytest.raises(ModelMissingError) as error:
        pipeline.warm_up()
    assert str(model_home / "rembg" / "models" / "u2net" / "u2net.onnx") in str(error.value)


def test_unknown_rembg_model_lists_the_choices(model_home, tmp_path):
    with pytest.raises(ConfigError, match="'nope' is not one lookalike can verify; one of: "):
        build(model_home, tmp_path, rembg={"model": "nope", "model_path": ""})


def test_a_custom_rembg_model_loads_from_any_folder(model_home, tmp_path):
    outside = tmp_path / "mask.onnx"  # rembg alone would refuse a path outside its folder
    outside.write_bytes((model_home / "rembg" / "custom" / "mask.onnx").read_bytes())
    pipeline = build(model_home, tmp_path, rembg={"model_path": str(outside)})
    pipeline.warm_up()
    assert pipeline.remover.id.startswith("rembg-u2net_custom@")
    assert pipeline.remover.model_files()[0].path == outside


def test_a_rembg_model_that_is_not_onnx_stops_the_command(model_home, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    pipeline = build(model_home, tmp_path, rembg={"model_path": str(broken)})
    with pytest.raises(ModelMissingError, match="cannot load rembg model"):
        pipeline.prepare(encode(Image.new("RGB", (40, 40), "red")))


def test_onnxruntime_and_torch_backends_give_the_same_vectors(model_home, tmp_path, catalogue):
    onnx = build(model_home, tmp_path, resnet18={"backend": "onnxruntime"})
    torch = build(model_home, tmp_path, resnet18={"backend": "torch"})
    assert onnx.model_id == torch.model_id  # switching backends re-embeds nothing
    photos = [path.read_bytes() for path in sorted(catalogue.iterdir())]
    photos.append(encode(cropped_query(product_photo(3))))
    images = [onnx.prepare(data).square for data in photos]
    similarity = np.sum(onnx.embed(images) * torch.embed(images), axis=1)
    assert similarity.min() >= 0.9999


def test_a_pipeline_knows_whether_it_runs_onnx_models(model_home, tmp_path):
    assert build(model_home, tmp_path).runs_onnx
    assert build(model_home, tmp_path, pipeline={"remover": "none"}).runs_onnx
    assert not build(model_home, tmp_path, pipeline={"remover": "none"},
                     resnet18={"backend": "torch"}).runs_onnx


def test_an_int8_resnet18_is_calibrated_on_photos_and_has_its_own_model_id(
        model_home, tmp_path, catalogue):
    cache = {"cache_dir": str(tmp_path / "cache")}
    float32 = build(model_home, tmp_path, resnet18=cache)
    int8 = build(model_home, tmp_path, resnet18={**cache, "int8": True})
    with pytest.raises(ModelMissingError, match=r"int8 copy of ResNet-18 is not made yet .*"
                                                r"run `lookalike quantize`"):
        int8.warm_up()
    photos = [path.read_bytes() for path in sorted(catalogue.iterdir())]
    squares = [float32.prepare(data).square for data in photos]
    assert float32.embedder.quantize(squares) == int8.embedder.int8_path
    assert int8.embedder.id.startswith("resnet18-int8@")
    assert int8.embedder.id.split("@")[1] != float32.embedder.id.split("@")[1]
    # Close to the float32 vectors, but not equal: hence the id of its own.
    similarity = np.sum(float32.embed(squares) * int8.embed(squares), axis=1)
    assert similarity.min() >= 0.99 and similarity.max() < 0.99999
    int8.embedder.int8_path.write_bytes(b"damaged")
    with pytest.raises(ModelMissingError, match="int8 copy of ResNet-18 is damaged"):
        build(model_home, tmp_path, resnet18={**cache, "int8": True}).warm_up()
    with pytest.raises(ConfigError, match="int8 needs backend \"onnxruntime\""):
        build(model_home, tmp_path, resnet18={"backend": "torch", "int8": True})


def test_the_onnx_export_is_cached_by_the_weights_digest(model_home, tmp_path, monkeypatch):
    from lookalike.pipeline.builtins import resnet18_embedder

    cache = tmp_path / "cache"
    first = build(model_home, tmp_path, resnet18={"cache_dir": str(cache)})
    first.warm_up()
    digest = first.embedder.id.split("@")[1]
    [exported] = cache.glob("*.onnx")
    assert exported.name.startswith(f"resnet18-{digest}")
    assert sorted(p.name for p in cache.iterdir()) == [exported.name, exported.name + ".sha256"]

    def export_again(*_):
        raise AssertionError("exported twice")

    monkeypatch.setattr(resnet18_embedder, "export_onnx", export_again)
    build(model_home, tmp_path, resnet18={"cache_dir": str(cache)}).warm_up()
    other_weights = tmp_path / "other.pth"
    write_resnet18_state_dict(other_weights, seed=1)
    with pytest.raises(AssertionError, match="exported twice"):  # new weights, new export
        build(model_home, tmp_path, resnet18={"cache_dir": str(cache),
                                              "weights": str(other_weights)}).warm_up()


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_a_damaged_onnx_export_is_made_again_not_loaded(model_home, tmp_path, damage):
    cache = tmp_path / "cache"
    first = build(model_home, tmp_path, resnet18={"cache_dir": str(cache)})
    first.warm_up()
    [exported] = cache.glob("*.onnx")
    whole = exported.read_bytes()
    exported.write_bytes(b"" if damage == "empty" else whole[: len(whole) // 2])
    again = build(model_home, tmp_path, resnet18={"cache_dir": str(cache)})
    again.warm_up()  # before: ONNX Runtime's traceback, at every start
    assert exported.read_bytes() == whole
    image = first.prepare(encode(product_photo(1))).square
    assert np.array_equal(first.embed([image]), again.embed([image]))


def test_the_export_never_writes_through_a_planted_link(model_home, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    pipeline = build(model_home, tmp_path, resnet18={"cache_dir": str(cache)})
    exported = pipeline.embedder.onnx_file
    # Before: the export wrote to <name>.partial, following a link planted there.
    for planted in (exported.with_name(exported.name + ".partial"), exported):
        planted.symlink_to(victim)
    pipeline.warm_up()
    assert victim.read_bytes() == b"keep me"
    assert not exported.is_symlink() and exported.stat().st_size > 1000


def test_an_unknown_backend_is_a_config_error(model_home, tmp_path):
    with pytest.raises(ConfigError, match="resnet18.backend must be one of onnxruntime, torch"):
        build(model_home, tmp_path, resnet18={"backend": "tensorflow"})
