"""`lookalike eval`: leave-one-out precision@k on a folder of categories."""

from __future__ import annotations

import json

import numpy as np

from builders import product_photo
from lookalike.search.evaluate import same_category_hits


def test_hits_leave_the_query_out_and_count_same_category_neighbours():
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = np.array(["a", "a", "b", "a"])
    assert same_category_hits(vectors, labels, 1).tolist() == [1.0, 1.0, 0.0, 0.0]
    assert same_category_hits(vectors, labels, 2).tolist() == [1.0, 1.0, 0.0, 0.5]


def test_eval_reports_precision_overall_and_per_category(workspace, run_cli, tmp_path):
    folder = tmp_path / "shop"
    for category, seeds in {"tshirts": [0, 4], "trousers": [1, 5], "bags": [3, 7]}.items():
        (folder / category).mkdir(parents=True)
        for seed in seeds:
            for variant in range(3):  # three photos of each product
                photo = product_photo(seed).rotate(variant * 4, fillcolor=(250, 250, 248))
                photo.save(folder / category / f"{seed}-{variant}.jpg")
    (folder / "bags" / "broken.jpg").write_bytes(b"not a photo")
    (folder / "loose.jpg").write_bytes(b"ignored: not in a category")

    result = run_cli("eval", str(folder), "-k", "2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["images"] == 18 and report["k"] == 2
    assert report["precision"] == 1.0  # the nearest two are the product's other photos
    assert report["categories"]["bags"] == {"images": 6, "precision": 1.0}
    broken = {"path": "bags/broken.jpg", "error": "not an image Pillow can read"}
    assert report["failed"] == [broken]
    text = run_cli("eval", str(folder), "-k", "2").output
    assert text.startswith("precision@2: 1.0000 over 18 images")


def test_eval_of_a_folder_without_categories_is_a_user_error(workspace, run_cli, tmp_path):
    (tmp_path / "flat").mkdir()
    product_photo(1).save(tmp_path / "flat" / "a.jpg")
    result = run_cli("eval", str(tmp_path / "flat"))
    assert result.exit_code == 1 and "no images in category sub-folders" in result.output
