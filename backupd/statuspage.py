"""The status page for people (``GET /``): are my backups fine, and if not, what now?

Plain HTML and CSS with inline SVG charts, no script and nothing from elsewhere (a sidecar
often has no internet); it refreshes itself with a meta refresh. It renders a ``view``
(plain data, built by the daemon from the same state as /status and /healthz at request
time), so this module is pure: every value is escaped here, because database names,
labels and error messages are user data.
"""

from __future__ import annotations

import shlex
from datetime import UTC, datetime
from html import escape
from typing import Any

REFRESH_SECONDS = 60

# What a person can run to see more, for each kind of trouble.
MORE_COMMANDS = {
    "backup": ["docker compose logs backup", "docker compose exec backup backupd list --database {db}",
               "docker compose exec backup backupd backup --database {db}"],
    "verify": ["docker compose exec backup backupd verify latest --database {db}"],
    "target": ["docker compose logs backup", "docker compose exec backup backupd replicate"],
    "volume": ["docker compose logs backup", "docker compose exec backup backupd volumes list",
               "docker compose exec backup backupd volumes backup --volume {db}"],
}

STYLE = """
:root{--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--ink:#1f2328;--soft:#59636e;--line:#d1d9e0}
*{box-sizing:border-box}body{font:16px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--ink);
margin:0 auto;max-width:64rem;padding:1rem}h1{font-size:1.4rem;margin:.2rem 0}h2{font-size:1.2rem;margin:0 0 .5rem}
h3{font-size:1rem;margin:1rem 0 .3rem}.headline{border-left:.5rem solid;padding:.6rem 1rem;margin:.5rem 0 1rem;
border-radius:.3rem}.ok{color:var(--ok)}.warn{color:var(--warn)}.bad{color:var(--bad)}
.headline.ok{border-color:var(--ok);background:#dafbe1}.headline.warn{border-color:var(--warn);background:#fff8c5}
.headline.bad{border-color:var(--bad);background:#ffebe9}.headline p{margin:.2rem 0;color:var(--ink)}
section{border:1px solid var(--line);border-radius:.4rem;padding:.8rem 1rem;margin:0 0 1rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.25rem .5rem .25rem 0;vertical-align:top;
border-bottom:1px solid var(--line)}th{font-weight:600;white-space:nowrap}td{overflow-wrap:anywhere}
code{font-size:.9em;background:#f6f8fa;padding:.05rem .3rem;border-radius:.2rem;overflow-wrap:anywhere}
svg{width:100%;height:auto;max-height:9rem}a{color:inherit}.muted{color:var(--soft)}
ul{margin:.2rem 0;padding-left:1.2rem}
footer{color:var(--soft);font-size:.85rem}.fixed{table-layout:fixed}.fixed td,.fixed tbody th{overflow-wrap:anywhere}
.fixed thead th:first-child{width:28%}
@media (max-width:40rem){body{padding:.5rem}th{white-space:normal}table{font-size:.9rem}.fixed thead th{font-size:.8rem}
section{padding:.6rem}}
"""

_MARK = {"ok": "✔", "warn": "⚠", "bad": "✖"}


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _ago(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "never"
    seconds = max((now - then).total_seconds(), 0)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


def _when(then: datetime | None) -> str:
    return then.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if then else "—"  # the scheduler's are local


def _size(size: int | None) -> str:
    if size is None:
        return "—"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def _status(kind: str, text: str) -> str:
    """A coloured word that also carries a symbol: colour is never the only signal."""
    return f'<span class="{kind}">{_MARK[kind]} {_e(text)}</span>'


def _command_list(kind: str, database: str | None) -> str:
    """Commands to paste: the name is quoted for the shell (it is user data); a failure of a
    whole run (``database`` None) gets the commands that name no database."""
    items = "".join(f"<li><code>{_e(c.format(db=shlex.quote(database or '')))}</code></li>"
                    for c in MORE_COMMANDS[kind] if database or "{db}" not in c)
    return f"<ul>{items}</ul>"


def _headline(health: dict[str, Any]) -> str:
    reasons, warnings = health.get("reasons") or [], health.get("warnings") or []
    if reasons:
        kind, title = "bad", "Backups need attention"
    elif warnings:
        kind, title = "warn", "Backups are fine, with warnings"
    else:
        kind, title = "ok", "All backups are fine"
    lines = "".join(f"<p>{_status('bad', r)}</p>" for r in reasons)
    lines += "".join(f"<p>{_status('warn', w)}</p>" for w in warnings)
    return f'<div class="headline {kind}" role="status"><h1>{_MARK[kind]} {title}</h1>{lines}</div>'


def chart(history: list[dict[str, Any]], failures: list[dict[str, Any]], label: str) -> str:
    """Size as bars and duration as a line over the kept backups, oldest left; failures as
    red crosses at their time. Its text alternative sums it up."""
    width, height, pad = 600, 120, 6
    points = sorted(history, key=lambda h: h["time"])
    marks = sorted(failures, key=lambda f: f["time"])
    times = [p["time"] for p in points] + [f["time"] for f in marks]
    if not times:
        return '<p class="muted">No backups to chart yet.</p>'
    start, end = min(times), max(times)
    span = max((end - start).total_seconds(), 1.0)

    def x(when: datetime) -> float:
        return pad + (width - 2 * pad) * ((when - start).total_seconds() / span if len(times) > 1 else 0.5)

    biggest = max([p["size"] or 0 for p in points] + [1])
    slowest = max([p["duration"] or 0 for p in points] + [0.001])
    bar = max(min((width - 2 * pad) / max(len(points), 1) * 0.6, 24), 3)
    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{_e(label)}">',
             f"<title>{_e(label)}</title>",
             f'<line x1="0" y1="{height - pad}" x2="{width}" y2="{height - pad}" stroke="#d1d9e0"/>']
    for p in points:
        h = (height - 2 * pad) * (p["size"] or 0) / biggest
        parts.append(f'<rect x="{x(p["time"]) - bar / 2:.1f}" y="{height - pad - h:.1f}" width="{bar:.1f}" '
                     f'height="{h:.1f}" fill="#54aeff"><title>{_e(_when(p["time"]))}: {_e(_size(p["size"]))}, '
                     f'{_e(p["duration"])} s</title></rect>')
    line = " ".join(f'{x(p["time"]):.1f},{height - pad - (height - 2 * pad) * (p["duration"] or 0) / slowest:.1f}'
                    for p in points)
    if len(points) > 1:
        parts.append(f'<polyline points="{line}" fill="none" stroke="#8250df" stroke-width="2"/>')
    for f in marks:
        cx = x(f["time"])
        parts.append(f'<g stroke="#cf222e" stroke-width="3"><title>failed {_e(_when(f["time"]))}: '
                     f'{_e(f["error"])}</title><line x1="{cx - 6:.1f}" y1="{pad:.1f}" x2="{cx + 6:.1f}" '
                     f'y2="{pad + 12:.1f}"/><line x1="{cx + 6:.1f}" y1="{pad:.1f}" x2="{cx - 6:.1f}" '
                     f'y2="{pad + 12:.1f}"/></g>')
    parts.append("</svg>")
    legend = ('<p class="muted">Blue bars: size; purple line: duration'
              + ("; red crosses: failed runs" if marks else "") + ".</p>")
    return "".join(parts) + legend


def _verification_kind(result: Any) -> str:
    """passed: ok; none yet or unverifiable (encrypted, no identity): a warning; else bad."""
    return "ok" if result == "passed" else "warn" if not result or result == "unverifiable" else "bad"


def _verification(v: dict[str, Any] | None, database: str) -> str:
    if not v:
        return _status("warn", "not verified yet")
    result = v.get("result")
    kind = _verification_kind(result)
    text = f"{result} {_when(v.get('time'))}"
    if v.get("id"):
        text += f" (backup {v['id']})"
    reason = f"<br><span class=\"muted\">{_e(v.get('reason'))}</span>" if v.get("reason") else ""
    more = _command_list("verify", database) if kind == "bad" else ""
    return _status(kind, text) + reason + more


def _database(db: dict[str, Any], now: datetime, next_backup: datetime | None) -> str:
    name, newest = db["name"], db.get("newest")
    rows = []
    if newest:
        kind = "bad" if newest.get("damaged") else "ok"
        rows.append(("Newest backup", f"{_status(kind, _ago(newest['time'], now))} "
                     f"<span class=\"muted\">({_e(_when(newest['time']))}, <code>{_e(newest['id'])}</code>)</span>"
                     + (f"<br>{_status('bad', 'damaged: ' + str(newest['damaged']))}" if newest.get("damaged")
                        else "")))
        rows.append(("Size", _e(_size(newest.get("size")))))
        rows.append(("Duration", _e(f"{newest['duration']:.1f} s" if newest.get("duration") is not None else "—")))
    else:
        rows.append(("Newest backup", _status("bad", "none yet")))
    rows.append(("Verification", _verification(db.get("verification"), name)))
    if db.get("targets"):
        copies = newest.get("replicas", []) if newest else []
        items = "".join(f"<li>{_status('ok', 'confirmed on ' + t)}</li>" if t in copies
                        else f"<li>{_status('warn', 'not yet on ' + t)}</li>" for t in db["targets"])
        rows.append(("Copies", f"<ul>{items}</ul>"))
    rows.append(("Backups kept", _e(db.get("count", 0))))
    rows.append(("Next backup", _e(_when(next_backup))))
    table = "".join(f'<tr><th scope="row">{k}</th><td>{v}</td></tr>' for k, v in rows)
    failure = db.get("failure")
    trouble = ""
    if failure:
        trouble = (f"<h3>{_status('bad', 'Last run failed')}</h3><p>{_e(_when(failure['time']))}: "
                   f"{_e(failure['error'])}</p><p>To see more:</p>"
                   f"{_command_list('backup', None if db.get('whole_run') else name)}")
    label = f"Size and duration of the kept backups of {name}"
    return (f'<section aria-labelledby="db-{_e(db["anchor"])}"><h2 id="db-{_e(db["anchor"])}">Database '
            f'<code>{_e(name)}</code></h2><table>{table}</table>{trouble}<h3>History</h3>'
            f'{chart(db.get("history", []), [failure] if failure else [], label)}</section>')


def _table_section(anchor: str, title: str, columns: list[str], rows: list[str]) -> str:
    """A section holding one table: headed columns, then the given ``<tr>`` rows. The columns
    share the width evenly and their text wraps, so five of them fit a 375 px phone."""
    head = "".join(f'<th scope="col">{column}</th>' for column in columns)
    return (f'<section aria-labelledby="{anchor}"><h2 id="{anchor}">{title}</h2><table class="fixed"><thead>'
            f'<tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></section>')


def _targets(targets: list[dict[str, Any]]) -> str:
    if not targets:
        return ""
    rows = []
    for t in targets:
        ok = t.get("ok")
        state = (_status("ok", "ok") if ok else _status("bad", "failed") if ok is False
                 else _status("warn", "no run yet"))
        detail = _e(t.get("error") or "")
        refused = "".join(f"<li><code>{_e(r.get('id'))}</code>: {_e(r.get('reason'))}</li>"
                          for r in t.get("refused") or [])
        if refused:
            detail += f"<ul>{refused}</ul>"
        if ok is False:
            detail += _command_list("target", None)
        rows.append(f"<tr><td><code>{_e(t['url'])}</code></td><td>{state}</td><td>{_e(_when(t.get('time')))}</td>"
                    f"<td>{_e(t.get('sent', 0))} sent</td><td>{detail}</td></tr>")
    return _table_section("targets", "Copies elsewhere", ["Target", "Last run", "When", "Sent", "Details"], rows)


def _volumes(volumes: list[dict[str, Any]], now: datetime) -> str:
    if not volumes:
        return ""
    rows = []
    for v in volumes:
        failure = v.get("failure")
        last = (f"{_status('bad', 'failed ' + _when(failure['time']))}<br>{_e(failure['error'])}"
                f"{_command_list('volume', v['name'])}" if failure else _status("ok", "ok"))
        rows.append(f"<tr><td><code>{_e(v['name'])}</code></td><td>{_e(_ago(v['time'], now))}</td>"
                    f"<td>{_e(_size(v['size']))}</td><td>{last}</td></tr>")
    return _table_section("volumes", "Volumes", ["Volume", "Newest archive", "Size", "Last run"], rows)


def _at(text: str | None) -> datetime | None:
    """An ISO time as /status gives it (the PITR view is /status's)."""
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def _pitr(pitr: dict[str, Any] | None, now: datetime) -> str:
    """Point-in-time recovery: the window a restore can reach, the stream, the last base
    backup and drill."""
    if not pitr:
        return ""
    window, receiver = pitr.get("window"), pitr.get("receiver") or {}
    reach = (_status("ok", f"{_when(_at(window['start']))} to {_when(_at(window['end']))}") if window
             else _status("bad", "none: no base backup recovers to the newest WAL"))
    streaming = receiver.get("streaming")
    lag = receiver.get("lag_bytes")
    stream = (_status("ok", "streaming") if streaming else
              _status("bad", f"down since {_when(_at(receiver.get('down_since')))}"))
    if lag is not None:
        stream += f" · {_e(_size(lag))} behind"
    if receiver.get("error") and not streaming:
        stream += f"<br>{_e(receiver['error'])}"
    bases = pitr.get("base_backups") or []
    base = (f"{_e(_ago(_at(bases[0]['stop_time']), now))} · {_e(_size(bases[0]['size']))}" if bases
            else _status("warn", "none yet"))
    drill = pitr.get("last_drill") or {}
    drilled = (_status("ok", f"ok {_when(_at(drill['time']))}") if drill.get("ok") else
               _status("bad", f"failed {_when(_at(drill['time']))}: {drill.get('reason')}") if drill.get("ok") is False
               else _status("warn", drill.get("reason") or "not yet"))
    if pitr.get("restore_estimate"):
        drilled += f"<br>{_e(pitr['restore_estimate'])}"
    gaps = pitr.get("gaps") or []
    gap = _status("warn", f"last at {_when(_at(gaps[-1]['time']))}: {gaps[-1]['reason']}") if gaps else "none"
    rows = [f'<tr><th scope="row">{label}</th><td>{value}</td></tr>' for label, value in
            (("Cluster", _e(pitr.get("system_identifier") or "not known yet")), ("Restorable", reach),
             ("WAL stream", stream), ("Newest base backup", base), ("Drill", drilled), ("Gaps", gap),
             *_chains(pitr), *_other_clusters(pitr))]
    return ('<section aria-labelledby="pitr"><h2 id="pitr">Point-in-time recovery</h2><table><tbody>'
            f'{"".join(rows)}</tbody></table></section>')


def _chains(pitr: dict[str, Any]) -> list[tuple[str, str]]:
    """Incremental base backups, by chain (a full one and those taken on it)."""
    from backupd.pitr.chains import describe
    lines = [_e(line) for line in map(describe, pitr.get("chains") or []) if line]
    return [("Chains", "<br>".join(lines))] if lines else []


def _other_clusters(pitr: dict[str, Any]) -> list[tuple[str, str]]:
    """Clusters in the folder beside this server's (an earlier initdb, another server): each
    restorable on its own with ``--cluster``; none of what is above is about them."""
    others = [c for c in pitr.get("clusters") or [] if c.get("system_identifier") != pitr.get("system_identifier")]
    lines = []
    for other in others:
        window = other.get("window")
        reach = f"{_when(_at(window['start']))} to {_when(_at(window['end']))}" if window else "no window"
        lines.append(f"<code>{_e(other.get('system_identifier'))}</code>: {reach}")
    return [("Other clusters", "<br>".join(lines))] if lines else []


def _jobs(jobs: dict[str, dict[str, Any]]) -> str:
    if not jobs:
        return ""
    rows = [f"<tr><td>{_e(name)}</td><td><code>{_e(j.get('schedule'))}</code></td>"
            f"<td>{_e(_when(j.get('next_run')))}</td><td>{'running' if j.get('running') else ''}</td></tr>"
            for name, j in sorted(jobs.items())]
    return _table_section("jobs", "Schedule", ["Job", "Schedule", "Next run", "Now"], rows)


def _overview(databases: list[dict[str, Any]], now: datetime) -> str:
    """One row per database: the five-second answer, before the details."""
    if not databases:
        return ""
    rows = []
    for db in databases:
        newest, verification, failure = db.get("newest"), db.get("verification") or {}, db.get("failure")
        age = _status("bad" if not newest or newest.get("damaged") else "ok", _ago(newest["time"], now) if newest
                      else "none")
        result = verification.get("result")
        verified = _status(_verification_kind(result), str(result) if result else "not yet")
        targets, copies = db.get("targets") or [], (newest or {}).get("replicas", [])
        copied = (_status("ok" if all(t in copies for t in targets) else "warn",
                          f"{sum(t in copies for t in targets)} of {len(targets)}") if targets else "—")
        last = _status("bad", "failed") if failure else _status("ok", "ok")
        rows.append(f'<tr><th scope="row"><a href="#db-{_e(db["anchor"])}"><code>{_e(db["name"])}</code></a></th>'
                    f"<td>{age}</td><td>{verified}</td><td>{copied}</td><td>{last}</td></tr>")
    return _table_section("glance", "At a glance", ["Database", "Newest backup", "Verified", "Copies", "Last run"],
                          rows)


def render(view: dict[str, Any]) -> str:
    now: datetime = view["now"]
    next_backup = (view.get("jobs") or {}).get("backup", {}).get("next_run")
    databases = "".join(_database(db, now, next_backup) for db in view.get("databases", []))
    if not databases:
        databases = '<section><h2>Databases</h2><p class="muted">No backups yet.</p></section>'
    pitr = _pitr(view.get("pitr"), now)
    instance = _e(view.get("instance") or "-")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
            f"<title>backupd {instance}: {_e(view['title'])}</title><style>{STYLE}</style></head><body>"
            f"<header>{_headline(view['health'])}</header>"
            f"<main>{_overview(view.get('databases', []), now)}{databases}{_volumes(view.get('volumes', []), now)}"
            f"{_targets(view.get('targets', []))}{pitr}{_jobs(view.get('jobs') or {})}</main>"
            f"<footer>backupd {_e(view.get('version'))} · instance {instance} · as of {_e(_when(now))} · "
            f"refreshes every {REFRESH_SECONDS} s · machine-readable: <a href=\"/status\">/status</a>, "
            f"<a href=\"/healthz\">/healthz</a>, <a href=\"/metrics\">/metrics</a></footer></body></html>")


def login_form(failed: bool = False) -> str:
    note = '<p class="bad" role="alert">✖ That token is not right.</p>' if failed else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>backupd: sign in</title>'
            f"<style>{STYLE}</style></head><body><main><h1>backupd</h1>{note}"
            f'<form method="post" action="/login"><p><label for="token">HTTP_AUTH_TOKEN</label><br>'
            f'<input id="token" name="token" type="password" autocomplete="current-password" required></p>'
            f'<p><button type="submit">Show the status</button></p></form></main></body></html>')
