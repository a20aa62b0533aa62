"""Ray, imported lazily: ``embcore.distributed`` imports without it and names the extra when a
call needs it."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from embcore.errors import ConfigError

_INSTALL_HINT = 'embcore.distributed needs Ray; install it with: pip install "embcore[ray]"'


def require_ray() -> ModuleType:
    """The ``ray`` module, or an ImportError that names the ``ray`` extra."""
    try:
        import ray
    except ImportError as err:  # pragma: no cover - exercised only without ray
        raise ImportError(_INSTALL_HINT) from err
    if not callable(getattr(ray, "init", None)):
        # A directory named ``ray`` on the path imports as an empty namespace package: e.g. Ray's
        # own session folder /tmp/ray, for a command started in /tmp.
        where = list(getattr(ray, "__path__", [])) or getattr(ray, "__file__", None)
        raise ImportError(
            f"the 'ray' module found at {where} is not Ray (a folder named ray on the import "
            "path, e.g. Ray's session folder /tmp/ray when started from /tmp): run from another "
            'directory, or install Ray with: pip install "embcore[ray]"'
        )
    return ray


def connect(address: str | None, **init_options: Any) -> ModuleType:
    """Ray, initialised: a local cluster when ``address`` is None and Ray is not running yet,
    else a connection to the cluster at ``address`` (``"auto"``, ``"ray://host:10001"``, ...).
    A process already connected keeps its connection (Ray allows one per process)."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    if address is not None and not isinstance(address, str):
        raise ConfigError(f"address must be a Ray address string or None, got {address!r}")
    ray.init(address=address, **init_options)
    return ray
