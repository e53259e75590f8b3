from datetime import datetime, timezone

import pytest

from backupd.errors import UsageError
from backupd.repository import encode_name, make_id, parse_id


@pytest.mark.parametrize("name,encoded", [
    ("shop", "shop"), ("a/../../b", "a%2F..%2F..%2Fb"), ("_globals", "%5Fglobals"), (".hidden", "%2Ehidden"),
    ("100%", "100%25"), ("%2F", "%252F"), ("ünï cødé", "ünï cødé"),
])
def test_names_are_percent_encoded_so_no_database_escapes_or_collides(name, encoded):
    assert encode_name(name) == encoded


def test_ids_round_trip_and_keep_dashes_in_names():
    when = datetime(2026, 11, 21, 2, 0, tzinfo=timezone.utc)
    assert make_id("my-shop", when) == "my-shop-20261121T020000Z"
    assert parse_id("my-shop-20261121T020000Z") == ("my-shop", when)


@pytest.mark.parametrize("text", ["shop", "../../etc/passwd", "shop-2026", "-20261121T020000Z"])
def test_non_ids_are_rejected(text):
    with pytest.raises(UsageError):
        parse_id(text)
