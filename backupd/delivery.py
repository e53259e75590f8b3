"""Sending one report to every channel: each on its own thread, each retried a bounded
number of times, and the whole bounded in time, so a channel that hangs or refuses
never stops the others and never holds up the job that reported for long."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backupd.channels import Channel, DeliveryFailed
from backupd.logging import get_logger

log = get_logger("backupd.notify")

ATTEMPTS = 3
BACKOFF = 1.0  # seconds before the 2nd attempt; doubled before each next one
DEADLINE = 45.0  # seconds for the whole report: three attempts with their timeouts fit


@dataclass
class Outcome:
    channel: Channel
    error: str | None = None  # None once sent
    done: bool = False

    @property
    def ok(self) -> bool:
        return self.done and self.error is None


def deliver_all(channels: list[Channel], title: str, body: str, payload: dict[str, Any],
                count_failure: Callable[[str], None] | None = None) -> list[Outcome]:
    outcomes = [Outcome(channel) for channel in channels]
    threads = [threading.Thread(target=_deliver, args=(o, title, body, payload), daemon=True,
                                name=f"notify-{o.channel.scheme}") for o in outcomes]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + DEADLINE
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    # One still trying is left to finish alone (its thread writes to an outcome no longer
    # returned) and is reported as failed now.
    outcomes = [o if o.done else _late(o.channel) for o in outcomes]
    for outcome in outcomes:
        if not outcome.ok and count_failure:
            count_failure(outcome.channel.scheme)
    return outcomes


def _late(channel: Channel) -> Outcome:
    outcome = Outcome(channel, f"no answer within {DEADLINE:g} s", True)
    log.error("notification failed", channel=channel.shown, error=outcome.error)
    return outcome


def _deliver(outcome: Outcome, title: str, body: str, payload: dict[str, Any]) -> None:
    channel, delay = outcome.channel, BACKOFF
    for attempt in range(1, ATTEMPTS + 1):
        try:
            channel.deliver(title, body, payload)
            log.info("notification sent", channel=channel.shown)
            outcome.error, outcome.done = None, True
            return
        except DeliveryFailed as err:
            error = str(err)
        except Exception as err:  # a notifier must never break what it reports on
            error = f"{type(err).__name__}"  # never str(err): it may hold the URL
        if attempt == ATTEMPTS:
            log.error("notification failed", channel=channel.shown, attempts=attempt, error=error)
            outcome.error, outcome.done = error, True
            return
        log.warning("notification failed; retrying", channel=channel.shown, attempt=attempt, error=error)
        time.sleep(delay)
        delay *= 2
