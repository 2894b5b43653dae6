"""Files lookalike makes from a verified model file (the ONNX exports of the embedders, int8
copies of rembg's networks): each is written with its sha256 beside it (``<name>.sha256``) and
trusted only while the two agree, as a fetched file is trusted only while it matches its pin.
An empty, truncated or replaced file is made again (or refused), never loaded."""

from __future__ import annotations

import warnings
from pathlib import Path

from lookalike.base.atomic import atomic_path, write_atomically
from lookalike.base.errors import LookalikeError
from lookalike.models.files import file_digest


def digest_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def record_digest(path: Path) -> None:
    """Note the digest of ``path``, just made: from now on it is what ``is_sound`` expects."""
    write_atomically(digest_file(path), f"{file_digest(path, 'sha256')}\n".encode())


def is_sound(path: Path) -> bool:
    """True when ``path`` is there and still has the digest recorded when it was made."""
    try:
        recorded = digest_file(path).read_text().strip()
        return path.is_file() and file_digest(path, "sha256") == recorded
    except (OSError, UnicodeDecodeError):
        return False


def export_onnx(module, sample, input_name: str, destination: Path,
                metadata: dict[str, str] | None = None) -> None:
    """Export the torch ``module`` (taking ``sample``, a batch of one, as ``input_name``; its
    output "features"; any batch size) to ``destination``, with ``metadata`` in the file's
    properties. Written under a temporary name and renamed, its digest recorded, so a reader
    never sees half a file."""
    import torch

    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(destination, ".partial") as partial, warnings.catch_warnings():
            # The TorchScript exporter is deprecated for one that needs onnxscript; it exports
            # these networks exactly (the tests compare the vectors).
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (sample,), str(partial), dynamo=False,
                              input_names=[input_name], output_names=["features"],
                              opset_version=17,
                              dynamic_axes={input_name: {0: "batch"}, "features": {0: "batch"}})
            if metadata:
                import onnx

                exported = onnx.load(str(partial))
                onnx.helper.set_model_props(exported, metadata)
                onnx.save(exported, str(partial))
        record_digest(destination)
    except OSError as exc:
        raise LookalikeError(f"cannot write the ONNX model {destination}: {exc}") from None
