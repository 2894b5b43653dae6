"""The clip embedder: open_clip's model with lookalike's pixels, both backends, and search by
words through the CLI, the inbox and HTTP.

Real weights cannot be downloaded here: the tests of the vectors write the architecture of the
default built-in (ViT-B-16, as Marqo-FashionCLIP) with seeded random weights, which cost what
the real ones cost (conftest's ``clip_files``); those that run commands, the service and the
UI use open_clip's ViT-S-32, a tenth of the cost (``tiny_clip_files``). Each is written and
exported once per session."""

from __future__ import annotations

import json
import os

import httpx
import numpy as np
import pytest
from conftest import Workspace, clip_table, tiny_clip_table
from PIL import Image
from test_models import ModelServer

from builders import product_photo
from lookalike.base.errors import ConfigError, LookalikeError, ModelMissingError
from lookalike.models.files import ModelSource
from lookalike.models.onnx import OnnxRuntime
from lookalike.pipeline.builtins.clip_models import BUILTINS, DEFAULT_MODEL
from lookalike.pipeline.pipeline import Pipeline
from lookalike.pipeline.plugins import collect_steps, plugin_manager
from lookalike.pipeline.settings import PipelineSteps
from running import RunningService, answer_of, free_port, query_db, stored

ARCHITECTURE = "ViT-B-16"  # Marqo-FashionCLIP's, as conftest's clip_files writes it
WORDS = ["red floral summer dress", "black leather boots", "a striped shirt"]


def build(clip_files, tmp_path, **options) -> Pipeline:
    return Pipeline.build(collect_steps(plugin_manager()),
                          PipelineSteps(remover="none", embedder="clip"),
                          {"clip": clip_table(clip_files, **options)}, tmp_path,
                          ModelSource(fetch=False), OnnxRuntime())


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_vectors_equal_open_clips_own_on_the_same_weights_and_pixels(clip_files, tmp_path,
                                                                     backend):
    import open_clip
    import torch

    pipeline = build(clip_files, tmp_path, backend=backend)
    reference, _, preprocess = open_clip.create_model_and_transforms(
        ARCHITECTURE, pretrained=str(clip_files[0]))
    reference.eval()
    # The squares lookalike's padder makes from photos of several shapes, at the model's
    # size, with the model's interpolation. open_clip's own transform turns each into the
    # same pixels; and a photo that is square already, resized by either, is the same.
    photos = [product_photo(seed, size) for seed, size in
              ((1, (480, 640)), (2, (700, 500)), (3, (300, 300)))]
    squares = [pipeline.padder.pad(photo, pipeline.embedder.input_size, pipeline.resample)
               for photo in photos]
    assert pipeline.embedder.input_size == 224 and pipeline.resample == Image.Resampling.BICUBIC
    theirs = torch.stack([preprocess(square) for square in squares])
    np.testing.assert_allclose(pipeline.embedder.pixels(squares), theirs.numpy(), atol=1e-5)
    np.testing.assert_allclose(theirs[2].numpy(), preprocess(photos[2]).numpy(), atol=1e-5)

    with torch.inference_mode():
        image_vectors = reference.encode_image(theirs, normalize=True).numpy()
        text_vectors = reference.encode_text(open_clip.get_tokenizer(ARCHITECTURE)(WORDS),
                                             normalize=True).numpy()
    ours = pipeline.embed(squares)
    assert ours.shape == (3, 512)
    assert cosines(ours, image_vectors).min() >= 0.9999
    assert cosines(ours, ours[[1, 2, 0]]).max() < 0.9999  # three different vectors
    words = pipeline.embed_text(WORDS)
    assert words.shape == (3, 512)
    np.testing.assert_allclose(np.linalg.norm(words, axis=1), 1.0, atol=1e-5)
    assert cosines(words, text_vectors).min() >= 0.9999


def test_both_backends_share_a_model_id_naming_the_model_and_the_weights(clip_files, tmp_path):
    digest = __import__("hashlib").sha256(clip_files[0].read_bytes()).hexdigest()
    ids = {build(clip_files, tmp_path, backend=backend).embedder.id
           for backend in ("onnxruntime", "torch")}
    assert ids == {f"clip:{DEFAULT_MODEL}@{digest[:12]}"}
    image, text = build(clip_files, tmp_path).embedder.onnx_files()
    assert image.name.endswith("-image.onnx") and text.name.endswith("-text.onnx")


def test_the_exports_are_made_once_per_weights_file(clip_files, tmp_path, monkeypatch):
    from lookalike.pipeline.builtins import clip_embedder

    build(clip_files, tmp_path).warm_up()  # exported here or by an earlier test

    def export_again(*_):
        raise AssertionError("exported twice")

    monkeypatch.setattr(clip_embedder, "export_towers", export_again)
    pipeline = build(clip_files, tmp_path)
    pipeline.warm_up()
    assert pipeline.embed_text(WORDS[:1]).shape == (1, 512)
    for export in pipeline.embedder.onnx_files():
        assert export.with_name(export.name + ".sha256").is_file()


def test_weights_of_another_model_are_refused_in_one_line(clip_files, tmp_path, model_home):
    pipeline = build(clip_files, tmp_path, weights=str(model_home / "resnet18-test.pth"),
                     cache_dir=str(tmp_path / "cache"))
    with pytest.raises(LookalikeError, match="is not ViT-B-16 weights") as refused:
        pipeline.warm_up()
    assert "\n" not in str(refused.value)


def test_weights_at_a_path_with_another_digest_are_refused(clip_files, tmp_path):
    pipeline = build(clip_files, tmp_path, weights_sha256="0" * 64)
    with pytest.raises(ModelMissingError, match="does not have the pinned digest sha256:000"):
        pipeline.warm_up()


def test_a_model_in_a_folder_of_open_clips_layout_gives_the_same_vectors(clip_files, tmp_path):
    import open_clip

    folder = tmp_path / "downloaded"  # as `hf download <repo> --local-dir` leaves a hub model
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": open_clip.get_model_config(ARCHITECTURE),
         "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN),
                            "std": list(open_clip.OPENAI_DATASET_STD)}}))
    os.link(clip_files[0], folder / "open_clip_model.safetensors")
    local = build(clip_files, tmp_path, model="local-dir:downloaded", weights="",
                  backend="torch")
    assert local.dimension == 512 and "+clip:local-dir@" in local.model_id
    builtin = build(clip_files, tmp_path)
    squares = [local.padder.pad(product_photo(seed), 224, local.resample) for seed in (1, 2)]
    assert cosines(local.embed(squares), builtin.embed(squares)).min() >= 0.9999
    assert cosines(local.embed_text(WORDS), builtin.embed_text(WORDS)).min() >= 0.9999
    with pytest.raises(ConfigError, match="a local-dir: model's weights are its folder's"):
        build(clip_files, tmp_path, model="local-dir:downloaded")
    with pytest.raises(ConfigError, match="cannot read .*open_clip_config.json"):
        build(clip_files, tmp_path, model="local-dir:elsewhere", weights="")


def test_words_for_a_tokenizer_of_the_hubs_are_refused_in_one_line_saying_why(
        tiny_clip_files, tmp_path):
    """A model whose tokenizer open_clip reads through `transformers` (FashionSigLIP's is
    timm/ViT-B-16-SigLIP's): here one of open_clip's layout naming such a tokenizer."""
    import copy

    import open_clip

    folder = tmp_path / "siglip-like"
    folder.mkdir()
    config = copy.deepcopy(open_clip.get_model_config("ViT-S-32"))
    config["text_cfg"]["hf_tokenizer_name"] = "timm/ViT-B-16-SigLIP"
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    os.link(tiny_clip_files[0], folder / "open_clip_model.safetensors")
    pipeline = build(tiny_clip_files, tmp_path, model="local-dir:siglip-like", weights="",
                     backend="torch")
    with pytest.raises(LookalikeError, match="reads it through `transformers`") as refused:
        pipeline.embed_text(WORDS[:1])
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("model, message", [
    ("ViT-Nope-1", "open_clip has no architecture 'ViT-Nope-1'"),
    ("hf-hub:someone/some-clip", "hf download someone/some-clip --local-dir DIR"),
])
def test_a_model_lookalike_cannot_build_is_a_config_error(clip_files, tmp_path, model,
                                                          message):
    with pytest.raises(ConfigError, match=message):
        build(clip_files, tmp_path, model=model)


def test_a_model_that_is_not_built_in_needs_its_weights(tmp_path):
    with pytest.raises(ConfigError, match="set \\[clip\\] weights"):
        Pipeline.build(collect_steps(plugin_manager()), PipelineSteps(embedder="clip"),
                       {"clip": {"model": "ViT-B-32/laion2b_s34b_b79k"}}, tmp_path,
                       ModelSource(fetch=False), OnnxRuntime())


def test_the_builtin_weights_come_from_the_mirror_under_their_own_name_and_are_pinned(
        tiny_clip_files, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    os.link(tiny_clip_files[0], served / "marqo-fashionCLIP.safetensors")  # not Marqo's
    server = ModelServer(served)
    try:
        source = ModelSource(mirror=f"{server.url}/files/", cache_dir=tmp_path / "models")
        pipeline = Pipeline.build(collect_steps(plugin_manager()),
                                  PipelineSteps(remover="none", embedder="clip"), {}, tmp_path,
                                  source, OnnxRuntime())
        with pytest.raises(ModelMissingError, match="expected sha256 2bd31a2e6ba1"):
            pipeline.warm_up()
        assert server.requests == ["/files/marqo-fashionCLIP.safetensors"]
        assert not (tmp_path / "models" / "marqo-fashionCLIP.safetensors").exists()
    finally:
        server.stop()
    offline = Pipeline.build(collect_steps(plugin_manager()),
                             PipelineSteps(remover="none", embedder="clip"), {}, tmp_path,
                             ModelSource(fetch=False, cache_dir=tmp_path / "models"),
                             OnnxRuntime())
    with pytest.raises(ModelMissingError, match="marqo-fashionCLIP.safetensors") as missing:
        offline.warm_up()
    assert "huggingface.co/Marqo/marqo-fashionCLIP" in str(missing.value)


@pytest.mark.parametrize("model, dimension", [
    ("hf-hub:Marqo/marqo-fashionCLIP", 512), ("hf-hub:Marqo/marqo-fashionSigLIP", 768),
    ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", 512)])
def test_each_builtin_model_is_built_as_open_clip_declares_it(model, dimension, tmp_path):
    import open_clip

    builtin = BUILTINS[model]
    assert open_clip.get_pretrained_cfg(builtin.architecture, builtin.tag)["mean"]
    pipeline = Pipeline.build(collect_steps(plugin_manager()),
                              PipelineSteps(remover="none", embedder="clip"),
                              {"clip": {"model": model}}, tmp_path,
                              ModelSource(fetch=False, cache_dir=tmp_path / "models"),
                              OnnxRuntime())
    assert pipeline.dimension == dimension
    with pytest.raises(ModelMissingError, match=builtin.file_name) as missing:
        pipeline.warm_up()
    assert builtin.url in str(missing.value)


@pytest.fixture
def clip_workspace(workspace, tiny_clip_files, catalogue) -> Workspace:
    """Six catalogue photos and a config with the tiny CLIP model (open_clip's ViT-S-32)."""
    workspace.write_config(pipeline={"embedder": "clip", "remover": "none"},
                           clip=tiny_clip_table(tiny_clip_files))
    workspace.add_catalogue(catalogue, 6)
    return workspace


def test_a_text_query_ranks_the_catalogue_and_stores_nothing(clip_workspace, run_cli):
    assert run_cli("index").exit_code == 0
    rows = query_db(clip_workspace, "SELECT count(*) FROM images")
    result = run_cli("query", "--text", WORDS[0], "-k", "4", "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["query"] == WORDS[0]
    assert "+clip:ViT-S-32@" in answer["model"]
    assert answer["index_size"] == 6 and answer["k"] == 4
    assert [n["rank"] for n in answer["neighbours"]] == [1, 2, 3, 4]
    similarities = [n["similarity"] for n in answer["neighbours"]]
    assert similarities == sorted(similarities, reverse=True)
    assert {n["path"] for n in answer["neighbours"]} <= set(stored(clip_workspace))
    assert query_db(clip_workspace, "SELECT count(*) FROM images") == rows

    both = run_cli("query", "--text", WORDS[0], "--text", WORDS[1], "--json")
    assert [a["query"] for a in json.loads(both.output)] == WORDS[:2]
    blank = run_cli("query", "--text", "  ")
    assert blank.exit_code == 1 and blank.output.endswith('": the text is empty\n')
    assert blank.output.count("\n") == 1
    assert run_cli("query").exit_code == 2  # neither images nor words


def test_search_by_words_with_resnet18_is_refused_in_one_line(workspace, run_cli, catalogue):
    workspace.add_catalogue(catalogue, 2)
    assert run_cli("index").exit_code == 0
    result = run_cli("query", "--text", "red dress")
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert "has no text tower: search by words needs a CLIP model" in result.output


def test_eval_works_with_the_clip_embedder(clip_workspace, run_cli, tmp_path):
    folder = tmp_path / "shop"
    for category, seeds in {"tshirts": [0, 4], "bags": [3, 7]}.items():
        (folder / category).mkdir(parents=True)
        for seed in seeds:
            for variant in range(2):
                product_photo(seed).rotate(variant * 4, fillcolor=(250, 250, 248)).save(
                    folder / category / f"{seed}-{variant}.jpg")
    result = run_cli("eval", str(folder), "-k", "1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["images"] == 8 and report["failed"] == []
    assert set(report["categories"]) == {"tshirts", "bags"}


def test_the_service_answers_words_from_the_inbox_and_over_http(clip_workspace,
                                                                tiny_clip_files):
    port = free_port()
    clip_workspace.write_config(pipeline={"embedder": "clip", "remover": "none"},
                                clip=tiny_clip_table(tiny_clip_files),
                                http={"listen": f"127.0.0.1:{port}"})
    service = RunningService(clip_workspace)
    try:
        service.wait_for(lambda: len(stored(clip_workspace)) == 6, "6 images indexed")
        (clip_workspace.inbox / "summer.txt").write_text(WORDS[0] + "\n")
        (clip_workspace.inbox / "empty.txt").write_text("\n")
        (clip_workspace.inbox / "binary.txt").write_bytes(b"\xff\xfe\x00bad")
        (clip_workspace.inbox / "long.txt").write_text("dress " * 1000)
        service.wait_for(lambda: all(answer_of(clip_workspace, name) for name in
                                     ("summer.txt", "empty.txt", "binary.txt", "long.txt")),
                         "the text queries answered")
        summer = answer_of(clip_workspace, "summer.txt")
        assert summer["query"] == "summer.txt" and "+clip:" in summer["model"]
        assert len(summer["neighbours"]) == min(6, summer["k"])
        assert answer_of(clip_workspace, "empty.txt")["error"] == "the text is empty"
        assert answer_of(clip_workspace, "binary.txt")["error"] == \
            "a text query must be UTF-8 text"
        assert answer_of(clip_workspace, "long.txt")["error"] == \
            "a text query is at most 4096 bytes"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            answered = client.get("/query", params={"text": WORDS[0], "k": 3})
            assert answered.status_code == 200, answered.text
            assert [n["path"] for n in answered.json()["neighbours"]] == \
                [n["path"] for n in summer["neighbours"][:3]]
            assert client.get("/query", params={"text": " "}).status_code == 400
            assert client.get("/query", params={"text": "x" * 5000}).status_code == 400
        assert len(stored(clip_workspace)) == 6  # nothing stored for the words
        assert service.stop() == 0
    finally:
        service.kill()

