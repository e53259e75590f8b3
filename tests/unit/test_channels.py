"""What is shown of a notification URL, and how a list of them is split (pure logic)."""

import pytest

from backupd.channels import _pieces, shown, split_urls
from backupd.notify import more_command


@pytest.mark.parametrize("url, expected", [
    ("ntfy://ntfy.sh/secret-topic", "ntfy://ntfy.sh"),
    ("matrix://bot:pass@matrix.org/#room", "matrix://matrix.org"),
    ("tgram://123456789:AAHtoken/987", "tgram://"),  # the host place holds the bot token
    ("discord://1234/webhooktoken", "discord://"),
    ("slack://TokenA/TokenB/TokenC/#general", "slack://"),
    ("pover://userkey@apptoken", "pover://"),
    ("json://127.0.0.1:8080/hook?token=x", "json://127.0.0.1"),
    ("gotify://[::1]:80/tok", "gotify://::1"),
    ("JSON://Example.COM/x", "json://example.com"),
])
def test_only_scheme_and_a_real_host_are_shown(url, expected):
    assert shown(url) == expected


def test_spaces_and_commas_separate_but_a_comma_inside_a_url_stays():
    text = " json://a/b, ntfy://c/d\n gotify://e/f,mailto://u:p@x.org?to=a@x.org,b@x.org  form://g "
    assert split_urls(text) == ["json://a/b", "ntfy://c/d", "gotify://e/f", "mailto://u:p@x.org?to=a@x.org,b@x.org",
                                "form://g"]


def test_every_token_place_is_masked_in_a_reason():
    pieces = _pieces("json://usr-tok:pwd-tok@h.example/path-tok?key=query-tok#frag-tok")
    assert {"usr-tok", "pwd-tok", "path-tok", "query-tok", "frag-tok"} <= set(pieces)
    assert "h.example" not in pieces
    assert "tgram-token" in _pieces("tgram://tgram-token/123")


@pytest.mark.parametrize("key, command", [
    ("backup:shop", "backupd list --database=shop"),
    ("stale:my db", "backupd list '--database=my db'"),
    ("pitr-base", "backupd pitr status"),
    ("disk", "df -h /backups"),
    ("run", "backupd health"),
])
def test_the_command_that_shows_more_can_be_pasted(key, command):
    assert more_command(key, "/backups") == command
