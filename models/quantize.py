"""int8 copies of ONNX models: ONNX Runtime's static quantisation (QDQ, per channel), calibrated
on inputs the model really sees, written atomically."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lookalike.base.atomic import atomic_path
from lookalike.base.errors import ModelMissingError
from lookalike.models.derived import is_sound, record_digest


def int8_copy(path: Path, of: str) -> Path:
    """``path``, the int8 copy of the model ``of`` names, when it is made and sound; else
    ModelMissingError (one line) saying how to make it."""
    if not is_sound(path):
        state = "damaged" if path.exists() else "not made yet"
        raise ModelMissingError(f"the int8 copy of {of} is {state} ({path}): run `lookalike "
                                "quantize` (it calibrates the copy on photos from images_dir)")
    return path


def quantized(source: Path, target: Path, input_name: str, samples: Sequence[np.ndarray]) -> Path:
    """Write the int8 copy of the ONNX model ``source`` to ``target``, its activation ranges
    calibrated on ``samples`` (each one input batch); returns ``target``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Samples(CalibrationDataReader):
        def __init__(self):
            self._samples = iter(samples)

        def get_next(self):
            sample = next(self._samples, None)
            return None if sample is None else {input_name: sample}

    target.parent.mkdir(parents=True, exist_ok=True)
    with (tempfile.TemporaryDirectory(dir=target.parent, prefix=".quantizing-") as tmp,
          atomic_path(target, ".onnx") as made):
        optimised = Path(tmp) / "optimised.onnx"
        # Batch norms folded into the convolutions first, as ONNX Runtime's guide advises.
        quant_pre_process(str(source), str(optimised))
        quantize_static(str(optimised), str(made), Samples(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
    record_digest(target)
    return target
