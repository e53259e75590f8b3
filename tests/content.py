"""Awkward database content, and a fingerprint that proves two databases hold the same."""

from __future__ import annotations

import os
import re
import subprocess

from psycopg import sql

from tests.pg import Cluster

AWKWARD_DB = 'shop "ünïcødé" db'
READER_ROLE = "app_reader"


def create_awkward_database(cluster: Cluster, name: str = AWKWARD_DB) -> None:
    """Unicode and quoted names, bytea, arrays, jsonb, an enum, a partitioned table, large
    objects, sequences, a view, a materialized view and grants to a role."""
    with cluster.connect() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (READER_ROLE,)).fetchone():
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(READER_ROLE)))
        admin.execute(sql.SQL("ALTER DATABASE {} SET work_mem = '8MB'").format(sql.Identifier(name)))
    with cluster.connect(name) as conn:
        conn.execute("""
            CREATE SCHEMA "Sales & Co";
            CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'ünïcødé');
            CREATE SEQUENCE "Sales & Co".order_no START 1000;
            CREATE TABLE "Sales & Co"."Orders ""quoted"" ✓" (
                id bigint PRIMARY KEY DEFAULT nextval('"Sales & Co".order_no'),
                customer text NOT NULL,
                blob bytea,
                tags text[],
                doc jsonb,
                feeling mood,
                placed timestamptz DEFAULT now()
            );
            INSERT INTO "Sales & Co"."Orders ""quoted"" ✓" (customer, blob, tags, doc, feeling)
            SELECT 'Kunde ' || g || ' — ☃ ' || md5(g::text),
                   decode(md5(g::text), 'hex') || '\\x00ff'::bytea,
                   ARRAY['a' || g, 'with,comma', 'with "quote"', NULL],
                   jsonb_build_object('n', g, 'nested', jsonb_build_object('ü', g * 1.5), 'list', jsonb_build_array(g, 'x')),
                   (ARRAY['sad','ok','happy','ünïcødé']::mood[])[1 + g % 4]
            FROM generate_series(1, 2000) g;
            CREATE TABLE measurements (at date NOT NULL, value double precision) PARTITION BY RANGE (at);
            CREATE TABLE measurements_2025 PARTITION OF measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
            CREATE TABLE measurements_2026 PARTITION OF measurements FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
            INSERT INTO measurements SELECT date '2025-06-01' + g, g / 7.0 FROM generate_series(0, 400) g;
            CREATE TABLE empty_table (id serial PRIMARY KEY);
            CREATE TABLE documents (id serial PRIMARY KEY, content oid);
            INSERT INTO documents (content) SELECT lo_from_bytea(0, convert_to(repeat('large object ' || g, 500), 'UTF8'))
            FROM generate_series(1, 3) g;
            CREATE VIEW happy_orders AS SELECT id, customer FROM "Sales & Co"."Orders ""quoted"" ✓" WHERE feeling = 'happy';
            CREATE MATERIALIZED VIEW order_stats AS SELECT feeling, count(*) AS n FROM "Sales & Co"."Orders ""quoted"" ✓" GROUP BY feeling;
            GRANT USAGE ON SCHEMA "Sales & Co" TO app_reader;
            GRANT SELECT ON ALL TABLES IN SCHEMA "Sales & Co" TO app_reader;
            GRANT SELECT ON happy_orders TO app_reader;
            SELECT setval('"Sales & Co".order_no', 5000);
        """)


def fingerprint(cluster: Cluster, dbname: str) -> dict:
    """Schema (pg_dump --schema-only) plus a checksum of every table's rows, every
    sequence's value and every large object."""
    with cluster.connect(dbname) as conn:
        tables = conn.execute("""
            SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            ORDER BY 1, 2""").fetchall()
        data = {}
        for schema, table in tables:
            query = sql.SQL("SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {}.{} t")
            data[f"{schema}.{table}"] = conn.execute(query.format(sql.Identifier(schema), sql.Identifier(table))).fetchone()
        sequences = conn.execute("SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2").fetchall()
        large_objects = conn.execute(
            "SELECT md5(string_agg(md5(lo_get(oid)), ',' ORDER BY oid)) FROM pg_largeobject_metadata").fetchone()
        settings = conn.execute(
            "SELECT setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
            "WHERE d.datname = current_database() AND s.setrole = 0").fetchall()
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype "
            "FROM pg_database WHERE datname = current_database()").fetchone()
    return {"schema": schema_dump(cluster, dbname), "data": data, "sequences": sequences,
            "large_objects": large_objects, "settings": settings, "database": owner}


def schema_dump(cluster: Cluster, dbname: str) -> str:
    env = {**os.environ, "PGPASSWORD": cluster.password, "PGHOST": cluster.host, "PGPORT": str(cluster.port),
           "PGUSER": cluster.user, "PGDATABASE": dbname}
    pg_dump = str(cluster.bindir / "pg_dump")  # the server's own major: an older one refuses it
    out = subprocess.run([pg_dump, "--schema-only"], env=env, capture_output=True, text=True, check=True).stdout
    # \\restrict keys are random for every dump run.
    return re.sub(r"^(-- Dumped (from|by)|\\(un)?restrict ).*$", "", out, flags=re.MULTILINE)
