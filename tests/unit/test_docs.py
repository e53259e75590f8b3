"""The documentation cannot drift from the code: the settings reference is the settings
model's, .env.example's defaults are the model's, the module map names every module and
package, the README stays short, and the site builds with no broken link."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from backupd.settings import Settings, load_settings
from tests.conftest import REPO

DOCS = REPO / "docs"


def test_the_configuration_page_is_what_the_settings_model_generates():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "gen-config-docs"), "--check"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_the_configuration_page_names_every_setting_once():
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    for name in Settings.model_fields:
        rows = re.findall(rf"^\| `{name.upper()}`[ |]", page, flags=re.MULTILINE)
        assert len(rows) == 1, name.upper()


def example_defaults() -> dict[str, str]:
    """The commented `# NAME=value` lines of .env.example: the defaults it shows."""
    shown = {}
    for line in (REPO / ".env.example").read_text(encoding="utf-8").splitlines():
        if match := re.match(r"^# ([A-Z][A-Z0-9_]+)=(.*)$", line):
            value = re.split(r"\s{2,}#|^#", match[2])[0].strip()
            if value:
                shown[match[1]] = value
    return shown


def test_every_default_that_env_example_shows_is_the_models():
    shown = example_defaults()
    assert len(shown) > 40  # the parse found the file's defaults
    defaults = load_settings({})
    for name, value in shown.items():
        field = name.lower()
        parsed = getattr(load_settings({name: value}), field)
        assert parsed == getattr(defaults, field), f".env.example shows {name}={value}, the default is another"


def backupd_modules() -> tuple[set[str], dict[str, set[str]]]:
    """Top-level modules and packages of backupd/, and each package's modules."""
    root = REPO / "backupd"
    top = {p.name for p in root.glob("*.py")} | {f"{p.parent.name}/" for p in root.glob("*/__init__.py")}
    inside = {f"{p.name}/": {m.name for m in p.glob("*.py") if m.name != "__init__.py"}
              for p in root.iterdir() if (p / "__init__.py").exists()}
    return top, inside


def test_the_module_map_names_every_module_and_package():
    page = (DOCS / "architecture.md").read_text(encoding="utf-8")
    rows = {m[1]: m[2] for m in re.finditer(r"^\| `([\w./]+)` \|(.*)\|$", page, flags=re.MULTILINE)}
    top, inside = backupd_modules()
    assert top - set(rows) == set(), "modules or packages missing from docs/architecture.md"
    assert set(rows) - top == set(), "docs/architecture.md names modules that do not exist"
    for package, modules in inside.items():
        named = set(re.findall(r"`(\w+\.py)`", rows[package]))
        assert modules - named == set(), f"modules of {package} missing from docs/architecture.md"
        assert named - modules == set(), f"docs/architecture.md names modules {package} does not have"


def test_the_readmes_code_map_names_every_module_in_its_package():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Code map", 1)[1].split("\n## ", 1)[0]
    top, inside = backupd_modules()
    named = set(re.findall(r"`([\w/]+(?:\.py|/))`", section))
    modules = {m for m in top if m.endswith(".py") and m != "__init__.py"}
    assert modules - named == set(), "modules missing from the README's code map"
    for package, members in inside.items():
        lines = [line for line in section.splitlines() if f"`{package}`" in line]
        listed = {name for line in lines for name in re.findall(r"`(\w+\.py)`", line.split(f"`{package}`", 1)[1])}
        assert lines and members - listed == set(), f"modules of {package} missing from the README's code map"


def test_the_readme_is_short_and_its_settings_are_real_with_their_defaults():
    generator = load_generator()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme.count("\n") <= 250
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \| ([^|]+) \|", readme, flags=re.MULTILINE)
    assert len(rows) == 10, rows
    for name, default in rows:
        assert name.lower() in Settings.model_fields, name
        assert default.strip() == generator.default_text(name.lower()), name


def load_generator():
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("gen_config_docs", str(REPO / "scripts" / "gen-config-docs"))
    spec = importlib.util.spec_from_loader("gen_config_docs", loader)
    assert spec
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_every_page_of_docs_is_in_the_site(tmp_path: Path):
    """`mkdocs build --strict`, as ./scripts/test runs it: a broken link or anchor, or a page
    missing from the nav, fails. Built into a temporary folder, never into the checkout."""
    mkdocs = Path(sys.executable).with_name("mkdocs")
    if not mkdocs.exists():
        pytest.fail("mkdocs is not installed: it is in the test extra (pip install -e '.[test]')")
    result = subprocess.run([str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=REPO, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (REPO / "site").exists()
