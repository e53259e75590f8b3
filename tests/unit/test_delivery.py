"""Sending a report to every channel: one failing or hanging never stops the others, each
failure is retried a bounded number of times and counted, and the whole is bounded in time."""

import threading
import time

from backupd import delivery
from backupd.channels import Channel, DeliveryFailed


def test_a_failing_and_a_hanging_channel_stop_nothing_and_are_counted(monkeypatch):
    monkeypatch.setattr(delivery, "BACKOFF", 0.01)
    monkeypatch.setattr(delivery, "DEADLINE", 1.0)
    attempts = {"refused": 0}
    got: list[str] = []
    release = threading.Event()

    def refuse(title, body, payload):
        attempts["refused"] += 1
        raise DeliveryFailed("Connection refused")

    def hang(title, body, payload):
        release.wait(30)

    channels = [Channel("ntfy", "ntfy://a", refuse), Channel("gotify", "gotify://b", hang),
                Channel("json", "json://c", lambda title, body, payload: got.append(title))]
    counted: list[str] = []
    started = time.monotonic()
    outcomes = delivery.deliver_all(channels, "title", "body", {}, counted.append)
    release.set()
    assert time.monotonic() - started < 3
    assert got == ["title"] and attempts["refused"] == delivery.ATTEMPTS
    assert [o.ok for o in outcomes] == [False, False, True]
    assert outcomes[0].error == "Connection refused" and "no answer within" in str(outcomes[1].error)
    assert sorted(counted) == ["gotify", "ntfy"]


def test_an_unexpected_error_is_named_by_its_type_only(monkeypatch):
    monkeypatch.setattr(delivery, "BACKOFF", 0.01)

    def crash(title, body, payload):
        raise ValueError("https://hooks.example.com/secret-token")

    (outcome,) = delivery.deliver_all([Channel("https", "https://hooks.example.com", crash)], "t", "b", {})
    assert outcome.error == "ValueError"
