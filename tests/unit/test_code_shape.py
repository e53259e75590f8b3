"""The code keeps the shape the architecture promises: small modules, short functions, no
dead code, and verbs that are peers. Each rule is checked here so that it cannot erode one
change at a time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "backupd"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_over_500_lines():
    long = {str(p.relative_to(REPO)): n for p in modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_no_function_is_over_60_lines():
    long = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    assert long == []


def test_vulture_finds_no_dead_code():
    result = subprocess.run(
        [sys.executable, "-m", "vulture", "backupd", "vulture_allowlist.py", "--min-confidence", "80"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_action_imports_another_action():
    crossing = []
    for path in sorted((PACKAGE / "actions").glob("*.py")):
        own = f"backupd.actions.{path.stem}"
        for name in imported_modules(path):
            if name.startswith("backupd.actions.") and not name.startswith(own):
                crossing.append(f"{path.name} imports {name}")
    assert crossing == []


def test_only_the_entry_points_import_the_verbs():
    entry_points = {"cli", "daemon"}
    crossing = []
    for path in modules():
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "actions" or relative.stem.split("_")[0] in entry_points:
            continue
        for name in imported_modules(path):
            if name == "backupd.actions" or name.startswith("backupd.actions."):
                crossing.append(f"{relative} imports {name}")
    assert crossing == []
