"""loom: LOOM grid neural networks and transformer inference on the Python array API."""

from loom import errors
from loom._version import __version__
from loom.backend import get_backend, set_backend, to_numpy, use_backend

__all__ = ["__version__", "errors", "get_backend", "set_backend", "to_numpy", "use_backend"]
