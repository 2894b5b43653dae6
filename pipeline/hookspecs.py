"""Hook specifications: how a plugin adds a pipeline step or a vector index.

Each hook receives a ``register`` callable. A plugin calls it once per step it offers:
``register(name, factory, options, help)`` where ``options`` maps each key of the plugin's
config table (the table named after the step) to its default, ``help`` (optional) maps each
key to one line for `lookalike init`'s template, and ``factory(settings)`` builds the step
from a :class:`lookalike.pipeline.steps.StepSettings`.
"""

import pluggy

hookspec = pluggy.HookspecMarker("lookalike")
hookimpl = pluggy.HookimplMarker("lookalike")


@hookspec
def register_decoders(register):
    """Offer decoders: bytes -> PIL image (RGB or RGBA, orientation applied)."""


@hookspec
def register_removers(register):
    """Offer background removers: PIL image -> RGB image on a white background."""


@hookspec
def register_padders(register):
    """Offer padders: RGB image -> square RGB image of a given side length."""


@hookspec
def register_embedders(register):
    """Offer embedders: square RGB images -> L2-normalised float32 vectors."""


@hookspec
def register_indexes(register):
    """Offer vector indexes: unit vectors under integer keys -> nearest neighbours."""
