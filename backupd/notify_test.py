"""``backupd notify test``: one test message to every configured channel, one line each."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from backupd.channels import configured
from backupd.errors import ConfigError
from backupd.notify import Event, Report, instance_name, send

if TYPE_CHECKING:
    from backupd.settings import Settings


def send_test(settings: Settings) -> int:
    """0 when every channel took the message, 1 when any did not, 2 when none is configured."""
    channels = configured(settings)
    if not channels:
        print("backupd: no notification channel is configured: set NOTIFICATION_URLS, NOTIFICATION_EMAIL "
              "(with SMTP_HOST) or NOTIFY_WEBHOOK_URL", file=sys.stderr)
        return ConfigError.exit_code
    if settings.notify_on == "never":  # a test says whether the channels work, whatever NOTIFY_ON says
        print("backupd: NOTIFY_ON=never: backupd sends nothing else; testing the channels anyway",
              file=sys.stderr)
    report = Report(events=[Event("success", "test", "a test message: this channel works")],
                    status={"status": "test"}, instance=instance_name(settings),
                    backup_dir=str(settings.backup_dir))
    outcomes = send(settings, report)
    for outcome in outcomes:
        print(f"{outcome.channel.shown}: {'ok' if outcome.ok else 'failed: ' + str(outcome.error)}", flush=True)
    return 0 if all(o.ok for o in outcomes) else 1
