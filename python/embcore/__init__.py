"""embcore: train behavioural embeddings on event streams and monitor how they evolve."""

from embcore import _core

__version__: str = _core.__version__

__all__ = ["__version__"]
