"""ONNX Runtime sessions as lookalike runs them: one place for threads and providers."""

from __future__ import annotations

import re
from dataclasses import dataclass

from lookalike.base.cores import usable_cores
from lookalike.base.errors import ConfigError
from lookalike.base.settings import setting

CPU = "CPUExecutionProvider"
# What an embedder runs its model on: its ONNX export, or torch eagerly (the same vectors).
BACKENDS = ("onnxruntime", "torch")
# What "auto" takes, in this order, where the installed onnxruntime build has it.
ACCELERATORS = ("CUDAExecutionProvider", "CoreMLExecutionProvider", "DmlExecutionProvider")


def _provider_names(value: str) -> str | None:
    if value == "auto" or re.fullmatch(r"\w+ExecutionProvider(,\s*\w+ExecutionProvider)*", value):
        return None
    return "must be \"auto\" or provider names, comma-separated (e.g. CUDAExecutionProvider)"


@dataclass(frozen=True)
class OnnxRuntime:
    """The [onnxruntime] table: what runs the ONNX models (the remover's network, the
    embedder with backend "onnxruntime")."""

    providers: str = setting(
        "auto", "\"auto\": CUDA, CoreML or DirectML where this onnxruntime build has it, else "
        "the CPU; or provider names, comma-separated, in order of preference",
        _provider_names)

    def chosen(self) -> list[str]:
        """The providers sessions are made with; ConfigError (one line) for a named one
        this onnxruntime build does not have."""
        import onnxruntime

        available = onnxruntime.get_available_providers()
        if self.providers == "auto":
            return [name for name in ACCELERATORS if name in available] + [CPU]
        names = [name.strip() for name in self.providers.split(",")]
        missing = [name for name in names if name not in available]
        if missing:
            raise ConfigError(f"[onnxruntime] providers: {', '.join(missing)} not in this "
                              f"onnxruntime build, which has {', '.join(available)}")
        return names

    def session_options(self):
        """One input batch at a time spread over the usable cores, no second pool competing
        with it, and threads that sleep between runs instead of spinning (the stage beside
        it needs those cores meanwhile)."""
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = usable_cores()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return options

    def session(self, path: str):
        """A session over the ONNX file at ``path``."""
        import onnxruntime

        return onnxruntime.InferenceSession(path, self.session_options(),
                                            providers=self.chosen())
