"""Imports point down: every urgent_jax module imports only from packages of a lower rank (STYLE.md).

Packages of the same rank do not import each other (sqa never imports enhance, metrics never imports
simulation); a package may import its own modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "urgent_jax"
# Upward edges allowed by name, each with its reason. Keep this list short.
ALLOWED = {
    # The official generate_data_param.py is replaced by `python -m urgent_jax.simulation.
    # generate_params` (command path fixed by the issue); it is a CLI that reads source manifests.
    ("urgent_jax.simulation.generate_params", "urgent_jax.data.manifest"),
}

RANKS = {
    "audio": 0,
    "metrics": 1,
    "simulation": 1,
    "data": 2,
    "models": 2,
    "losses": 3,
    "evaluate": 4,
    "train": 5,
    "enhance": 6,
    "sqa": 6,
    "curation": 6,
}


def _imported_modules(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    parts = module.split(".")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts if is_pkg else parts[:-1]
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            # `from urgent_jax import metrics` imports the subpackage itself; other names imported
            # from the top-level package (urgent_jax/__init__.py, below every rank) are fine.
            if name == PACKAGE:
                found.pop()
                found += [(node.lineno, f"{PACKAGE}.{alias.name}") for alias in node.names
                          if alias.name in RANKS]
    return found


def layering_violations(root: Path) -> list[str]:
    """Every upward or sideways import under root/urgent_jax, as 'file:line: a (rank) -> b (rank)'."""
    problems = []
    pkg_root = root / PACKAGE
    for path in sorted(pkg_root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        module = ".".join(rel.parts[:-1] if path.name == "__init__.py" else rel.parts)
        parts = module.split(".")
        if len(parts) < 2:
            continue  # urgent_jax/__init__.py
        src = parts[1]
        if src not in RANKS:
            problems.append(f"{path}: package '{src}' has no rank in STYLE.md")
            continue
        for line, name in _imported_modules(path, module):
            target = name.split(".")
            if target[0] != PACKAGE or len(target) < 2 or target[1] == src:
                continue
            dst = target[1]
            if (module, name) in ALLOWED:
                continue
            if dst not in RANKS:
                problems.append(f"{path}:{line}: imports unknown package {name}")
            elif RANKS[dst] >= RANKS[src]:
                problems.append(f"{path}:{line}: {src} (r{RANKS[src]}) imports {dst} (r{RANKS[dst]})")
    return problems


def test_repository_imports_point_down():
    root = Path(__file__).resolve().parents[1]
    assert (root / PACKAGE).is_dir()
    problems = layering_violations(root)
    assert not problems, "upward imports:\n" + "\n".join(problems)


def test_checker_catches_upward_sideways_and_relative_imports(tmp_path):
    pkg = tmp_path / PACKAGE
    for sub in ("audio", "metrics", "simulation", "train"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "audio" / "ok.py").write_text("import numpy\nfrom . import ok\n")
    (pkg / "audio" / "up.py").write_text("def f():\n    from urgent_jax.train import loop\n")
    (pkg / "metrics" / "side.py").write_text("from ..simulation import mixer\n")
    (pkg / "metrics" / "pkg_import.py").write_text("from urgent_jax import simulation\n")
    (pkg / "train" / "down.py").write_text("from urgent_jax.audio import ok\nimport urgent_jax.metrics.side\n")
    problems = layering_violations(tmp_path)
    assert len(problems) == 3, problems
    assert any("up.py:2" in p and "audio (r0) imports train" in p for p in problems)
    assert any("side.py:1" in p and "metrics (r1) imports simulation" in p for p in problems)
    assert any("pkg_import.py:1" in p for p in problems)
