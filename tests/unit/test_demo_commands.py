"""The demo prints commands that can be copied and run as shown: a database name with
spaces, quotes or non-ASCII letters stays one argument when a shell reads the line."""

import importlib.util
import shlex

from tests.conftest import REPO
from tests.content import AWKWARD_DB


def load_demo():
    spec = importlib.util.spec_from_file_location("demo", REPO / "scripts" / "demo.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_printed_command_splits_back_into_the_arguments_it_ran():
    demo = load_demo()
    for args in (("restore", "latest", "--database", AWKWARD_DB, "--into", "demo_restored"),
                 ("backup", "--label", "it's a \"demo\" $HOME `x`"), ("list",)):
        line = demo.shown(*args)
        assert shlex.split(line) == ["backupd", *args], line


def test_the_awkward_name_is_quoted_as_one_word():
    line = load_demo().shown("restore", "latest", "--database", AWKWARD_DB)
    assert shlex.split(line)[-1] == AWKWARD_DB
    assert " " in AWKWARD_DB or "'" in line  # the name is awkward enough to need the quoting
