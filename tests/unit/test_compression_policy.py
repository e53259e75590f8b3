"""Which compression each dump gets, and where: the defaults chosen in bench/README.md."""

from pathlib import Path

import pytest

from backupd.transforms import Transform
from backupd.pgtools import Tools
from backupd.settings import load_settings


def tools(major: int) -> Tools:
    return Tools(major, Path(f"/usr/lib/postgresql/{major}/bin"), f"pg_dump (PostgreSQL) {major}.1")


def transform(**env: str) -> Transform:
    return Transform(load_settings({"BACKUP_COMPRESSION_THREADS": "2", **env}))


def test_the_external_zstd_stage_is_level_1_with_the_long_window():
    stage = transform().for_dump("custom", tools(15))
    assert stage.compressor() == [("zstd", ["zstd", "-q", "-1", "--long=24", "-T2", "-c"])]
    assert stage.pg_dump_compress() == "0" and stage.suffix(".dump") == ".dump.zst"
    assert stage.manifest_fields()["compression_level"] == 1


def test_pg_dump_16_and_newer_compresses_a_custom_archive_itself_at_level_2():
    stage = transform().for_dump("custom", tools(16))
    assert stage.compressor() == [] and stage.pg_dump_compress() == "zstd:2"
    assert stage.suffix(".dump") == ".dump"
    assert stage.manifest_fields() | {"encryption": None} == {
        "compression": "zstd", "compression_level": 2, "compressed_by": "pg_dump", "encryption": None}


def test_a_level_that_is_set_holds_on_both_routes_and_a_slow_one_keeps_the_threads():
    assert transform(BACKUP_COMPRESSION_LEVEL="3").for_dump("custom", tools(17)).pg_dump_compress() == "zstd:3"
    slow = transform(BACKUP_COMPRESSION_LEVEL="9").for_dump("custom", tools(17))
    assert slow.compressor() == [("zstd", ["zstd", "-q", "-9", "-T2", "-c"])]  # no long window past level 3


@pytest.mark.parametrize(("compression", "major", "inside"), [
    ("zstd", 16, "zstd:2"), ("zstd", 18, "zstd:2"), ("gzip", 14, "6"), ("gzip", 17, "gzip:6"),
    ("zstd", 15, None), ("bzip2", 17, None), ("none", 17, None),
])
def test_a_directory_dump_is_compressed_by_pg_dumps_workers_where_pg_dump_can(compression, major, inside):
    stage = transform(BACKUP_COMPRESSION=compression).for_dump("directory", tools(major))
    if inside:
        assert stage.pg_dump_compress() == inside and stage.compressor() == []
        assert stage.suffix(".dir.tar") == ".dir.tar"  # the tar of compressed files is not compressed again
    else:
        assert stage.pg_dump_compress() == "0" and stage is not None


def test_plain_and_tar_formats_are_always_compressed_by_the_stage():
    for fmt in ("plain", "tar"):
        assert transform().for_dump(fmt, tools(18)).pg_dump_compress() == "0"
