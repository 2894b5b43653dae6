"""ONNX Runtime sessions as lookalike runs them: one place for threads and providers."""

from __future__ import annotations

from lookalike.base.cores import usable_cores

# CPU only: the service's stages share the machine's cores (bench/removal.py).
PROVIDERS = ["CPUExecutionProvider"]


def session_options():
    """One input batch at a time spread over the usable cores, no second pool competing with
    it, and threads that sleep between runs instead of spinning (the stage beside it needs
    those cores meanwhile)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = usable_cores()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def inference_session(path: str):
    """A session over the ONNX file at ``path``."""
    import onnxruntime

    return onnxruntime.InferenceSession(path, session_options(), providers=PROVIDERS)
