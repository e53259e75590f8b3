"""WAL file names and positions: pure arithmetic, as PostgreSQL's xlog_internal.h has it."""

from __future__ import annotations

import re

SEGMENT = re.compile(r"[0-9A-F]{24}")
HISTORY = re.compile(r"[0-9A-F]{8}\.history")
PARTIAL = re.compile(r"[0-9A-F]{24}\.partial")
_HISTORY_LINE = re.compile(r"\s*(\d{1,10})\s+([0-9A-F]{1,8}/[0-9A-F]{1,8})\b")


def parse_lsn(text: str) -> int:
    """``16/B374D848`` -> its 64-bit position."""
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def segments_per_id(segment_size: int) -> int:
    return 0x100000000 // segment_size


def segment_name(timeline: int, segno: int, segment_size: int) -> str:
    per_id = segments_per_id(segment_size)
    return f"{timeline:08X}{segno // per_id:08X}{segno % per_id:08X}"


def segment_of(lsn: int, segment_size: int) -> int:
    return lsn // segment_size


def parse_segment(name: str, segment_size: int) -> tuple[int, int]:
    """``000000010000000000000002`` -> (timeline 1, segment number 2)."""
    timeline, high, low = int(name[:8], 16), int(name[8:16], 16), int(name[16:24], 16)
    return timeline, high * segments_per_id(segment_size) + low


def is_wal_name(name: str) -> bool:
    """A completed segment or a timeline history file: what the archive keeps."""
    return bool(SEGMENT.fullmatch(name) or HISTORY.fullmatch(name))


def parse_history(text: str) -> list[tuple[int, int]]:
    """A timeline history file's entries: (ancestor timeline, the LSN where it ended), oldest first."""
    entries = []
    for line in text.splitlines():
        if match := _HISTORY_LINE.match(line):  # anything else (comments, damage) says nothing
            entries.append((int(match.group(1)), parse_lsn(match.group(2))))
    return entries


def timeline_path(latest: int, history: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(timeline, LSN where it begins) along the way to ``latest``, oldest first: what
    recovery to the latest timeline reads."""
    path, begin = [], 0
    for timeline, ended in history:
        path.append((timeline, begin))
        begin = ended
    path.append((latest, begin))
    return path


def is_archived_name(name: str) -> bool:
    """What an archived WAL file is called before its suffixes: a segment, a partial one
    kept from a broken stream, or a timeline history file."""
    return bool(is_wal_name(name) or PARTIAL.fullmatch(name))
