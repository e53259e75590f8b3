"""Where the settings' values come from: ``NAME`` or ``NAME_FILE`` in the environment.

Every field is read from the upper-cased field name, then from the libpq fallbacks in
``FALLBACKS``. Every variable ``X`` may be given as ``X_FILE`` instead (Docker secrets);
giving both is an error, reported with every other problem by ``load_settings``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

# Older names that existing setups use; the first one set wins.
FALLBACKS: dict[str, tuple[str, ...]] = {
    "db_host": ("PGHOST",),
    "db_port": ("PGPORT",),
    "db_user": ("PGUSER",),
    "db_password": ("PGPASSWORD",),
    "db_name": ("PGDATABASE",),
    "db_sslmode": ("PGSSLMODE",),
    "backup_timezone": ("TZ",),
}

MAX_SECRET_FILE_BYTES = 64 * 1024


class EnvWithFilesSource(PydanticBaseSettingsSource):
    """Reads ``NAME`` or ``NAME_FILE`` (never both) for each field and its fallbacks."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]):
        super().__init__(settings_cls)
        self.environ = environ
        self.problems: list[str] = []
        self.origin: dict[str, str] = {}  # field name -> the variable that supplied it

    def _read(self, name: str) -> str | None:
        direct = self.environ.get(name)
        file_name = self.environ.get(f"{name}_FILE")
        if direct is not None and file_name is not None:
            self.problems.append(f"{name}: both {name} and {name}_FILE are set; give only one")
            return None
        if file_name is not None:
            try:
                with open(file_name, "rb") as source:  # at most 64 KiB: /dev/zero must not hang the start
                    data = source.read(MAX_SECRET_FILE_BYTES + 1)
            except OSError as err:
                self.problems.append(f"{name}_FILE={file_name!r}: cannot be read ({err.strerror})")
                return None
            if len(data) > MAX_SECRET_FILE_BYTES:
                self.problems.append(f"{name}_FILE={file_name!r}: is larger than 64 KiB; give a file with the value")
                return None
            try:
                return data.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                self.problems.append(f"{name}_FILE={file_name!r}: is not UTF-8 text")
                return None
        return direct

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        for name in (field_name.upper(), *FALLBACKS.get(field_name, ())):
            value = self._read(name)
            if value is not None:
                self.origin[field_name] = name
                return value, field_name, False
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, _, _ = self.get_field_value(field, field_name)
            if value is not None:
                values[field_name] = value
        return values
