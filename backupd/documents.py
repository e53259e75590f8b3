"""The gate for every document backupd reads back from storage (manifests, state files,
gaps, run history): each kind is a typed model, validated where it is read. A document
that does not validate is an item of its own (listed as ``invalid``, warned about, never
followed), never an exception that takes a listing, a command or an endpoint down.

Names a document gives for files are plain file names (``FileName``): a stored word can
never point outside the folder the document belongs to, whatever it says (``../x``, an
absolute path, an empty string).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError


class InvalidDocument(ValueError):
    """A stored document that is not what backupd wrote: says why, in one line."""


def plain_file_name(name: str) -> str:
    """``name`` when it names a file directly inside a folder, else ValueError. A backslash
    is an ordinary character here (a database's name may hold one, and so do its files)."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"{name!r} is not a plain file name inside its folder")
    return name


FileName = Annotated[str, AfterValidator(plain_file_name)]


class Document(BaseModel):
    """Base of every stored document's model. Strict types (a count is an int, never the
    string "5"); unknown fields are kept, so a document written by a newer release reads."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


M = TypeVar("M", bound=Document)


def parse(model: type[M], data: Any) -> M:
    """``data`` (already decoded JSON) as ``model``, or InvalidDocument naming the first
    field that is wrong. Validated in JSON mode, as ``read`` does, so that a time is read
    from its ISO text in both."""
    return parse_json(model, json.dumps(data))


def parse_json(model: type[M], text: str | bytes) -> M:
    """JSON text as ``model``, or InvalidDocument."""
    try:
        return model.model_validate_json(text)
    except ValidationError as err:
        raise InvalidDocument(describe(err)) from None


def dump_json(document: Document) -> str:
    """A document as backupd stores it: exactly what its model reads back (fields it was
    made without stay absent, times in ISO form)."""
    data = document.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def read(model: type[M], path: Path) -> M:
    """The document at ``path``. OSError when it cannot be read (unreadable, not invalid);
    InvalidDocument when it is not JSON of the model's shape."""
    return parse_json(model, path.read_bytes())


def decode(text: str | bytes) -> Any:
    """JSON text, or InvalidDocument (not JSON, or nested too deep to read)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        raise InvalidDocument(f"it is not JSON: {str(err)[:120]}") from None


def decode_object(text: str | bytes) -> dict[str, Any]:
    """JSON text that must be an object, or InvalidDocument."""
    data = decode(text)
    if not isinstance(data, dict):
        raise InvalidDocument("the document: an object is expected")
    return data


def inside(folder: Path, name: str) -> Path:
    """``folder / name`` when ``name`` is a plain file name, else InvalidDocument."""
    try:
        return folder / plain_file_name(name)
    except ValueError as err:
        raise InvalidDocument(str(err)) from None


def describe(err: ValidationError) -> str:
    """The first problem of a validation error, as a short line without the offending value
    (which may be long, or hold something that must not reach a log)."""
    first = err.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "the document"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"
