"""WAL file names and positions: pure arithmetic, as PostgreSQL's xlog_internal.h has it."""

from __future__ import annotations

import re

SEGMENT = re.compile(r"[0-9A-F]{24}")
HISTORY = re.compile(r"[0-9A-F]{8}\.history")
PARTIAL = re.compile(r"[0-9A-F]{24}\.partial")


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
