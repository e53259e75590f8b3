"""The verbs are peers over a shared core: no action imports another action, nothing in
the core imports a verb, and no feature package (``actions/``, ``pitr/``) imports the
other. Only the modules that put the verbs together (``cli``, ``daemon``, ``coordinator``)
import them. Read from the source, so a function-level import counts too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "backupd"
FEATURES = ("actions", "pitr")  # each feature its own package over the shared core
ORCHESTRATION = {"backupd.cli", "backupd.daemon", "backupd.coordinator"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module a file imports, at any depth; ``from backupd import x`` names both."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def feature_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "backupd" and parts[1] in FEATURES else None


def import_edges() -> list[tuple[str, str]]:
    return [(module_name(path), name) for path in sorted(PACKAGE.rglob("*.py")) for name in imported(path)
            if name.startswith("backupd.")]


def test_no_action_imports_another_action():
    wrong = [(m, name) for m, name in import_edges()
             if m.startswith("backupd.actions.") and feature_of(name) == "actions" and name != m]
    assert not wrong, f"an action imports another action: {wrong}"


def test_only_the_orchestration_imports_the_verbs():
    wrong = [(m, name) for m, name in import_edges()
             if feature_of(name) == "actions" and feature_of(m) is None and m not in ORCHESTRATION]
    assert not wrong, f"imports of actions/ outside cli, daemon and coordinator: {wrong}"


def test_no_feature_package_imports_another():
    wrong = [(m, name) for m, name in import_edges()
             if (mine := feature_of(m)) is not None and (theirs := feature_of(name)) is not None and mine != theirs]
    assert not wrong, f"a feature package imports another's: {wrong}"


def test_the_rule_sees_a_function_level_import(tmp_path):
    """The check itself: an import inside a function is found."""
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from backupd.actions import replicate\n    import backupd.pitr.store\n")
    assert {"backupd.actions.replicate", "backupd.pitr.store"} <= imported(source)
