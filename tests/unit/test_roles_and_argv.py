from pathlib import Path

from backupd.dump_formats import dbname_conninfo, pg_dump_argv, restore_consumer
from backupd.pgtools import Tools
from backupd.postgres import split_setting
from backupd.roles import parse_globals

GLOBALS = r'''--
-- PostgreSQL database cluster dump
--

SET default_transaction_read_only = off;

CREATE ROLE app;
ALTER ROLE app WITH NOSUPERUSER INHERIT LOGIN PASSWORD 'SCRAM-SHA-256$4096:abc';
CREATE ROLE "Weird ""Role""";
ALTER ROLE "Weird ""Role""" WITH NOLOGIN;
COMMENT ON ROLE app IS 'multi
line; comment';
ALTER ROLE app SET search_path TO 'a', 'b';
GRANT "Weird ""Role""" TO app GRANTED BY postgres;
CREATE TABLESPACE fast OWNER postgres LOCATION '/ssd';
'''


def test_globals_are_parsed_into_roles_grants_and_tablespaces():
    plan = parse_globals(GLOBALS)
    assert list(plan.roles) == ["app", 'Weird "Role"']
    assert plan.roles["app"][0] == "CREATE ROLE app;"
    assert len(plan.roles["app"]) == 4  # create, attributes, comment, setting
    assert plan.grants == [('Weird "Role"', "app", 'GRANT "Weird ""Role""" TO app GRANTED BY postgres;')]
    assert plan.tablespaces == ["fast"]


TOOLS = Tools(17, Path("/usr/lib/postgresql/17/bin"), "pg_dump (PostgreSQL) 17.6")


def test_pg_dump_argv_is_exact():
    assert pg_dump_argv(TOOLS, "custom", "00000003-1", 300, ["--no-comments"]) == [
        "/usr/lib/postgresql/17/bin/pg_dump", "--format=custom", "--no-password", "--lock-wait-timeout=300000", "--compress=0",
        "--snapshot=00000003-1", "--no-comments"]
    assert pg_dump_argv(TOOLS, "directory", None, 1.5, [], jobs=4, directory=Path("/b/.x.staging")) == [
        "/usr/lib/postgresql/17/bin/pg_dump", "--format=directory", "--no-password", "--lock-wait-timeout=1500", "--compress=0",
        "--jobs=4", "--file=/b/.x.staging"]


def test_restore_commands_name_the_database_as_a_quoted_conninfo():
    assert dbname_conninfo("a=b 'c' \\d") == "dbname='a=b \\'c\\' \\\\d'"
    name, argv = restore_consumer(TOOLS, "custom", "x", jobs=1)
    assert name == "pg_restore" and "--single-transaction" in argv and "--exit-on-error" in argv
    name, argv = restore_consumer(TOOLS, "plain", "x")
    assert name == "psql" and "--set=ON_ERROR_STOP=1" in argv and argv[0] == "/usr/lib/postgresql/17/bin/psql"


def test_list_settings_are_split_like_pg_dumpall_does():
    assert split_setting('search_path="$user", public') == ("search_path", ["$user", "public"])
    assert split_setting("work_mem=8MB") == ("work_mem", ["8MB"])
    assert split_setting("DateStyle=ISO, MDY") == ("DateStyle", ["ISO, MDY"])
