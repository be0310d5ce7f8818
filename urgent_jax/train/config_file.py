"""Experiment configs from files, the way `--config FILE:VARIANT` names them (ml_collections config_flags).

    config = load_config("configs/se/bsrnn.py:tiny")    # get_config("tiny") of that file
    config = load_config("configs/simulation/validation.py")

Config files are loaded by path (they are not a package); relative paths are resolved against the
current directory, then against the repository root.
"""

from __future__ import annotations

import os
import runpy

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_config(spec: str):
    """The ConfigDict of `path[:variant]` (get_config(variant), or get_config() without one)."""
    path, _, variant = spec.partition(":")
    if not os.path.exists(path) and os.path.exists(os.path.join(REPO_ROOT, path)):
        path = os.path.join(REPO_ROOT, path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"config file {path} not found")
    get_config = runpy.run_path(path)["get_config"]
    return get_config(variant) if variant else get_config()
