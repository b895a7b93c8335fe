"""Configs: the seed's presets, ``retry_policies:`` files (with ``extends``) and ``RETRY_*``
environment overrides — all through the Rust host's own parser (``ricochet check``'s)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from . import _core
from ._core import RetryConfig

#: The seed's three levels.
PRESETS: dict[str, RetryConfig] = {name: RetryConfig.preset(name) for name in RetryConfig.PRESET_NAMES}


def load_policies(path: str | os.PathLike[str]) -> dict[str, RetryConfig]:
    """Every policy of a ``retry_policies:`` file (YAML, or JSON for ``*.json``), ``extends``
    resolved and validated; ``PolicyFileError`` lists every error with its line and column."""
    return _core.load_policy_file(os.fspath(path))


def load_policy(
    name: str = "default",
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> RetryConfig:
    """Policy ``name`` by the seed's precedence: ``RETRY_*`` variables > the file > the preset."""
    return _core.load_policy(name, None if path is None else os.fspath(path), os.environ if environ is None else environ)


def from_env(config: RetryConfig | None = None, environ: Mapping[str, str] | None = None) -> RetryConfig:
    """``config`` (default: the ``default`` preset) with the ``RETRY_*`` variables laid over it."""
    return _core.apply_env(config if config is not None else RetryConfig(), os.environ if environ is None else environ)


__all__ = ["PRESETS", "RetryConfig", "load_policies", "load_policy", "from_env", "Path"]
