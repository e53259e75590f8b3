"""Classes 2, 3 and 7 for point-in-time recovery, against a real cluster and its archive:
``pitr restore`` never lands on something that must not be replaced, takes the newest
intact base backup, never leaves a directory a server would start from at the wrong moment
(a damaged WAL file, a signal at any stage), and a time that cannot be a moment is exit 2.

The ``/`` spellings and the empty one are tried without ``--yes``: on a build without the
guard, ``--yes`` would move the machine's root (or the current folder) aside."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.adversarial.pitr_repository import build
from tests.integration.helpers import small_disk, start_backupd
from tests.pg import matrix_bindir
from tests.pitr.conftest import RecoveredServer
from tests.pitr.helpers import rows


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    yield from build(tmp_path_factory.mktemp("pitr-safety"))


@pytest.fixture
def copy(repo, tmp_path):
    """(backupd, BACKUP_DIR) on a private copy of the repository."""
    return repo.copy(tmp_path)


@pytest.fixture
def home():
    """A folder the postgres user can enter, for restored data directories (pytest's own
    are private to root)."""
    home = Path(tempfile.mkdtemp(prefix="backupd-pitr-"))
    home.chmod(0o755)
    yield home
    shutil.rmtree(home, ignore_errors=True)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``folder``: (size, mtime in ns); a moved or removed one shows."""
    found = {}
    for path in [folder, *folder.rglob("*")]:
        stat = path.lstat()
        found[str(path.relative_to(folder))] = (stat.st_size if path.is_file() else 0, stat.st_mtime_ns)
    return found


def old_content(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("someone's notes")
    return folder


def assert_only_old_content(folder: Path) -> None:
    """The folder as it was, nothing beside it built, nothing moved aside."""
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"], sorted(folder.iterdir())
    assert (folder / "notes.txt").read_text() == "someone's notes"
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name], sorted(folder.parent.iterdir())


def base_files(backup_dir: Path) -> list[Path]:
    """The base backups' files, newest first."""
    return sorted(backup_dir.glob("_pitr/*/base/base-*.tar*"), reverse=True)


def refused(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr


# Class 2 --------------------------------------------------------------------------------------
@pytest.mark.parametrize("spelling", ["//", "/./", "/x/..", "/tmp/../", "symlink"])
def test_the_root_in_any_spelling_is_refused(copy, tmp_path, spelling):
    backupd, backup_dir = copy
    if spelling == "symlink":
        (tmp_path / "root").symlink_to("/")
        spelling = str(tmp_path / "root")
    before = sorted(os.listdir("/"))
    message = refused(backupd("pitr", "restore", "--time", "latest", "--to", spelling))
    assert "system folder" in message and "--yes" not in message, message
    assert sorted(os.listdir("/")) == before


@pytest.mark.parametrize("where", ["itself", "inside", "deep inside", "its parent", "a symlink to it", "relative"])
def test_backup_dir_inside_or_around_is_refused_even_with_yes(copy, tmp_path, where):
    backupd, backup_dir = copy
    (tmp_path / "link").symlink_to(backup_dir)
    to = {"itself": str(backup_dir), "inside": str(backup_dir / "_pitr"),
          "deep inside": str(backup_dir / "_pitr" / "new" / "data"), "its parent": str(backup_dir.parent),
          "a symlink to it": str(tmp_path / "link"),
          "relative": os.path.relpath(backup_dir, Path(__file__).parents[2])}[where]
    before = snapshot(backup_dir)
    message = refused(backupd("pitr", "restore", "--time", "latest", "--to", to, "--yes"))
    assert "BACKUP_DIR" in message, message
    assert snapshot(backup_dir) == before
    assert not list(tmp_path.glob("*backupd-*"))


def assert_recovers_to(repo, folder, expected: list[int]) -> None:
    """A stock postgres 17 started on ``folder`` recovers, promotes and holds ``expected``."""
    server = RecoveredServer(matrix_bindir(17), folder)
    try:
        server.wait_promoted(repo.cluster)
        assert rows(server.as_cluster(repo.cluster)) == expected
    finally:
        server.stop()


def test_an_empty_destination_is_refused(copy):
    """Not the current folder: without the guard, ``--yes`` would move it aside (so not
    given here)."""
    backupd, backup_dir = copy
    message = refused(backupd("pitr", "restore", "--time", "latest", "--to", ""))
    assert "--to is empty" in message, message


@pytest.mark.parametrize("what", ["a file", "under a file"])
def test_a_destination_that_cannot_be_a_folder_is_refused(copy, tmp_path, what):
    backupd, backup_dir = copy
    (tmp_path / "file").write_text("x")
    to = {"a file": str(tmp_path / "file"), "under a file": str(tmp_path / "file" / "data")}[what]
    message = refused(backupd("pitr", "restore", "--time", "latest", "--to", to, "--yes"))
    assert "not a folder" in message, message
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.parametrize("where", ["its data directory", "its parent", "inside it"])
def test_a_running_servers_data_directory_is_refused_even_with_yes(repo, copy, where):
    backupd, backup_dir = copy
    data = Path(repo.cluster.base) / "data"
    to = {"its data directory": data, "its parent": data.parent, "inside it": data / "restored"}[where]
    before = sorted(os.listdir(data))
    message = refused(backupd("pitr", "restore", "--time", "latest", "--to", str(to), "--yes"))
    assert "running" in message, message
    assert sorted(os.listdir(data)) == before and not (data / "restored").exists()
    with repo.cluster.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


# Class 3 --------------------------------------------------------------------------------------
def test_a_damaged_newest_base_falls_back_to_the_older_one_and_the_drill_says_so(repo, copy, home):
    backupd, backup_dir = copy
    newest, older = base_files(backup_dir)
    with open(newest, "r+b") as damaged:  # same size, 8 bytes overwritten
        damaged.seek(newest.stat().st_size // 2)
        damaged.write(b"\xde\xad\xbe\xef" * 2)
    newest_id, older_id = newest.name.split(".")[0], older.name.split(".")[0]

    drill = backupd("pitr", "verify")
    assert drill.returncode == 1 and "Traceback" not in drill.stderr, drill.stderr
    assert newest_id in drill.stderr and "damaged" in drill.stderr, drill.stderr

    target = home / "restored"
    result = backupd.ok("pitr", "restore", "--time", "latest", "--to", str(target))
    assert f"skipped base backup {newest_id}" in result.stdout, result.stdout
    assert f"took base backup {older_id}" in result.stdout, result.stdout
    assert_recovers_to(repo, target, [1, 2])


@pytest.mark.parametrize("which", ["compressed", "copied by hand"])
def test_a_truncated_wal_file_fails_and_leaves_the_old_content_in_place(copy, home, which):
    backupd, backup_dir = copy
    victim = sorted(backup_dir.glob("_pitr/*/wal/0*.zst"))[-1]  # the newest: every restore reads it
    # Without its record (an archive written before records existed): the size check cannot
    # see it, so reading it back must.
    victim.with_name(victim.name.split(".")[0] + ".json").unlink()
    if which == "compressed":
        os.truncate(victim, victim.stat().st_size // 2)
    else:  # a plain segment put into the archive by hand, cut short (a full disk)
        plain = subprocess.run(["zstd", "-dc", str(victim)], capture_output=True, check=True).stdout
        victim.unlink()
        victim = victim.with_suffix("")
        victim.write_bytes(plain[:len(plain) // 2])
    target = old_content(home / "restored")
    result = backupd("pitr", "restore", "--time", "latest", "--to", str(target), "--yes")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert victim.name.split(".")[0] in result.stderr and "damaged" in result.stderr, result.stderr
    assert_only_old_content(target)


def test_a_recorded_wal_file_cut_short_is_left_out_and_named(copy, home):
    """With its record, a cut file is damaged by its size alone: the window ends before it,
    a restore says so, and the drill fails."""
    backupd, backup_dir = copy
    victim = sorted(backup_dir.glob("_pitr/*/wal/0*.zst"))[-1]
    os.truncate(victim, victim.stat().st_size - 1)
    segment = victim.name.split(".")[0]
    result = backupd.ok("pitr", "restore", "--time", "latest", "--to", str(home / "restored"))
    assert "left out damaged WAL files" in result.stdout and segment in result.stdout, result.stdout
    drill = backupd("pitr", "verify")
    assert drill.returncode == 1 and segment in drill.stderr and "Traceback" not in drill.stderr, drill.stderr


@pytest.mark.parametrize("trouble", ["a truncated WAL file", "a full disk"])
def test_a_failed_restore_onto_a_mount_point_leaves_it_as_it_was(copy, home, trouble):
    """A volume mounted right at DIR: the data directory is built inside it, out of sight."""
    backupd, backup_dir = copy
    if trouble == "a truncated WAL file":
        victim = sorted(backup_dir.glob("_pitr/*/wal/0*.zst"))[-1]
        victim.with_name(victim.name.split(".")[0] + ".json").unlink()  # as an older archive has it
        os.truncate(victim, victim.stat().st_size // 2)
    with small_disk(home / "volume", "200m" if trouble == "a truncated WAL file" else "24m", "0755") as volume:
        (volume / "notes.txt").write_text("someone's notes")
        result = backupd("pitr", "restore", "--time", "latest", "--to", str(volume), "--yes")
        # A disk too small is refused before anything is extracted (exit 2, with the figures).
        failed = (1, "") if trouble == "a truncated WAL file" else (2, "not enough room")
        assert result.returncode == failed[0] and failed[1] in result.stderr, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        assert sorted(p.name for p in volume.iterdir()) == ["notes.txt"]
        assert (volume / "notes.txt").read_text() == "someone's notes"


def test_a_restore_onto_a_mount_point_keeps_the_old_content_inside_and_starts(repo, copy, home):
    backupd, backup_dir = copy
    with small_disk(home / "volume", "200m", "0755") as volume:
        (volume / "notes.txt").write_text("someone's notes")
        backupd.ok("pitr", "restore", "--time", "latest", "--to", str(volume), "--yes")
        (aside,) = volume.glob("backupd-replaced-*")
        assert (aside / "notes.txt").read_text() == "someone's notes"
        assert not list(volume.glob(".backupd-building-*")) and (volume / "recovery.signal").exists()
        assert_recovers_to(repo, volume, [1, 2])


# Signals at every stage ------------------------------------------------------------------------
def slow_tool(folder: Path, name: str, seconds: float) -> None:
    """``name`` on PATH sleeps before it does its work: a stage that lasts."""
    real = subprocess.run(["which", name], capture_output=True, text=True, check=True).stdout.strip()
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(f'#!/bin/sh\nsleep {seconds}\nexec {real} "$@"\n')
    (folder / name).chmod(0o755)


def huge_newest_base(backup_dir: Path) -> None:
    """The newest base backup's file becomes a sparse 6 GiB one (its manifest says so): its
    checksum takes seconds."""
    import json

    newest = base_files(backup_dir)[0]
    os.truncate(newest, 6 << 30)
    manifest_path = newest.with_name(newest.name.split(".")[0] + ".json")
    manifest = json.loads(manifest_path.read_text())
    manifest["size"] = 6 << 30
    manifest_path.write_text(json.dumps(manifest))


def slow_waldump(folder: Path, seconds: float) -> Path:
    """A PG_BINDIR whose PostgreSQL 17 is the real one but for a slow ``pg_waldump``."""
    real = matrix_bindir(17)
    bindir = folder / "17" / "bin"
    bindir.mkdir(parents=True)
    for tool in real.iterdir():
        (bindir / tool.name).symlink_to(tool)
    (bindir / "pg_waldump").unlink()
    (bindir / "pg_waldump").write_text(f'#!/bin/sh\nsleep {seconds}\nexec {real / "pg_waldump"} "$@"\n')
    (bindir / "pg_waldump").chmod(0o755)
    return folder


def start_restore(env: dict[str, str], target: Path, moment: str = "latest") -> subprocess.Popen:
    return start_backupd(env, "pitr", "restore", "--time", moment, "--to", str(target), "--yes")


def wait_for_stage(proc: subprocess.Popen, stage: str, seen: list[str]) -> None:
    deadline = time.monotonic() + 60
    for line in proc.stderr:  # type: ignore[union-attr]
        seen.append(line)
        if stage in line or time.monotonic() > deadline:
            break
    assert seen and stage in seen[-1], "".join(seen)


@pytest.mark.parametrize("stage, signum", [
    ("checking the base backup", signal.SIGTERM),
    ("extracting the base backup", signal.SIGTERM),
    ("copying the WAL", signal.SIGTERM),
    ("copying the WAL", signal.SIGINT),
    ("finding the newest commit", signal.SIGTERM),
], ids=["checksum-TERM", "extraction-TERM", "wal-copy-TERM", "wal-copy-INT", "waldump-TERM"])
def test_a_signal_at_any_stage_leaves_nothing_to_start_from(repo, copy, home, tmp_path, stage, signum):
    backupd, backup_dir = copy
    tools, env, moment = tmp_path / "bin", dict(backupd.env), "latest"
    if stage == "checking the base backup":
        huge_newest_base(backup_dir)
    elif stage == "extracting the base backup":
        slow_tool(tools, "tar", 30)
    elif stage == "copying the WAL":
        slow_tool(tools, "zstd", 3)
    else:
        env["PG_BINDIR"] = str(slow_waldump(tmp_path / "pg", 30))
        moment = repo.after_last_commit.isoformat()  # in the window: pg_waldump is asked
    env["PATH"] = f"{tools}:{os.environ['PATH']}"
    before = snapshot(backup_dir)
    target = old_content(home / "restored")
    proc, seen = start_restore(env, target, moment), []
    try:
        wait_for_stage(proc, stage, seen)
        time.sleep(0.3)
        proc.send_signal(signum)
        _, rest = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    stderr = "".join(seen) + rest
    assert proc.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr and "nothing was built" in stderr, stderr
    assert_only_old_content(target)
    after = snapshot(backup_dir)
    assert after.keys() == before.keys(), set(after) ^ set(before)


def test_a_signal_as_the_settings_are_written_leaves_all_or_nothing(copy, home):
    """The last step is too short to aim at: the process is frozen (SIGSTOP) as it begins,
    then SIGTERM. Either the restore had not put the result in place (143, the old content),
    or it had (0, a complete data directory); never a half-built one."""
    backupd, backup_dir = copy
    target = old_content(home / "restored")
    proc, seen = start_restore(backupd.env, target), []
    try:
        wait_for_stage(proc, "writing the recovery settings", seen)
        proc.send_signal(signal.SIGSTOP)
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)
        _, rest = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    stderr = "".join(seen) + rest
    assert "Traceback" not in stderr, stderr
    # A SIGTERM that lands after the work is done, as the process ends, may find the default
    # handler back (-15): what counts is what DIR holds, all or nothing.
    if (target / "recovery.signal").exists():
        assert proc.returncode in (0, -signal.SIGTERM), stderr
        assert (target / "PG_VERSION").exists()
        (aside,) = home.glob("restored.backupd-replaced-*")
        assert (aside / "notes.txt").read_text() == "someone's notes"
        assert sorted(p.name for p in home.iterdir()) == sorted(["restored", aside.name])
    else:
        assert proc.returncode in (143, -signal.SIGTERM), stderr
        assert_only_old_content(target)


def test_what_a_killed_restore_left_is_removed_by_the_next_one_and_nothing_else(copy, home, tmp_path):
    backupd, backup_dir = copy
    slow_tool(tmp_path / "bin", "tar", 30)
    target = old_content(home / "restored")
    proc, seen = start_restore({**backupd.env, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}, target), []
    try:
        wait_for_stage(proc, "extracting the base backup", seen)
    finally:
        proc.kill()  # SIGKILL: nothing can clean up
        proc.communicate()
    (left,) = home.glob(".restored.backupd-building-*")
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]  # a server would not start there
    look_alike = home / ".restored.backupd-building-someone-elses"
    look_alike.mkdir()
    backupd.ok("pitr", "restore", "--time", "latest", "--to", str(target), "--yes")
    assert not left.exists() and look_alike.exists()
    assert (target / "recovery.signal").exists() and not (target / ".backupd-building-pid").exists()


# Class 7 --------------------------------------------------------------------------------------
@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
                                    "0001-01-01T00:00:00", "9999-12-31T23:59:59", "", "yesterday"])
def test_a_time_that_cannot_be_in_the_window_is_exit_2(copy, home, moment):
    backupd, backup_dir = copy
    message = refused(backupd("pitr", "restore", "--time", moment, "--to", str(home / "restored")))
    assert "--time" in message, message
    assert not list(home.iterdir())
