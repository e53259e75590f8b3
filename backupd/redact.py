"""Which values are secret, and how to show them without revealing them.

Names follow the settings' own: *PASSWORD*, *PASS, *SECRET*, *IDENTITY*, *TOKEN*,
NOTIFY_WEBHOOK_URL, NOTIFICATION_URLS, and credentials inside any URL.
"""

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "********"

_SECRET_NAME = re.compile(r"PASSWORD|PASS$|SECRET|IDENTITY|TOKEN|^NOTIFY_WEBHOOK_URL$|^NOTIFICATION_URLS$",
                          re.IGNORECASE)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")


def is_secret_name(name: str) -> bool:
    """True for a variable name whose value must never be shown."""
    return bool(_SECRET_NAME.search(name))


# Not secret by name, but credentials all the same: kept from every child process.
_CREDENTIAL_NAMES = frozenset({"AWS_ACCESS_KEY_ID"})


def is_secret_variable(name: str, value: str) -> bool:
    """True for an environment variable that must never reach a child process that does not
    need it: a secret name, its ``_FILE`` form (``SMTP_PASS_FILE``), a credential, or a
    value that carries credentials inside a URL (``DATABASE_URL=postgres://u:pw@h/db``)."""
    base = name[:-5] if name.upper().endswith("_FILE") else name
    return (is_secret_name(name) or is_secret_name(base) or base.upper() in _CREDENTIAL_NAMES
            or bool(_URL_CREDENTIALS.search(value)))


def strip_url_credentials(url: str) -> str:
    """``s3://key:secret@bucket/x`` -> ``s3://bucket/x``; a password in userinfo is dropped,
    a bare user name (``ssh://backup@host``) is kept because it is not a secret."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def redact_text(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Remove known secret values and URL credentials from free text (error messages, stderr)."""
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, MASK)
    return _URL_CREDENTIALS.sub(lambda m: m.group("scheme") + MASK + "@", text)
