"""Every setting appears in .env.example, and every variable there is a setting."""

import re
from pathlib import Path

from backupd.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def test_env_example_names_every_setting_and_nothing_else():
    named = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", EXAMPLE.read_text(), flags=re.MULTILINE))
    settings = {name.upper() for name in Settings.model_fields}
    assert named == settings
