"""Create a benchmark database of realistic data, of one of three kinds:

- ``app`` (the default): customers and events with random text built from words, uuids,
  timestamps, amounts, e-mail addresses and jsonb; not pgbench's blank filler;
- ``metrics``: mostly numeric rows (sensor readings: ids, timestamps, random doubles), whose
  entropy is much higher, so compression behaves differently;
- ``tables``: the ``app`` data spread over 20 tables of similar size (parallel dumps).

    python bench/generate.py NAME SIZE_MB [app|metrics|tables]   (connection from DB_HOST, DB_PORT, ...)
"""

from __future__ import annotations

import os
import random
import sys
import time

import psycopg
from psycopg import sql

WORDS = ("order invoice customer shipment delayed payment refund account address street city postal "
         "warehouse product category price discount coupon review rating excellent poor average quality "
         "delivery courier tracking number returned exchange size colour blue red green large small medium "
         "monday tuesday wednesday thursday friday weekend morning evening urgent normal low priority note "
         "called emailed requested confirmed cancelled pending processing completed failed retry support "
         "ticket issue resolved escalated manager team north south east west region branch store online "
         "mobile desktop browser session login logout password reset profile update subscription renewal "
         "monthly yearly trial premium basic plan upgrade downgrade feedback survey newsletter campaign").split()


def connect(dbname: str) -> psycopg.Connection:
    return psycopg.connect(host=os.environ.get("DB_HOST", "localhost"), port=os.environ.get("DB_PORT", "5432"),
                           user=os.environ.get("DB_USER", "postgres"), password=os.environ.get("DB_PASSWORD"),
                           dbname=dbname, autocommit=True)


def main(name: str, size_mb: int, kind: str = "app") -> None:
    rng = random.Random(42)
    # 50,000 snippets of 20-200 words: rows pick them by a hash of their number.
    snippets = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 30))) for _ in range(50_000)]
    with connect("postgres") as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    started = time.monotonic()
    with connect(name) as conn:
        if kind == "metrics":
            _metrics(conn, size_mb)
        elif kind == "tables":
            _tables(conn, size_mb, snippets)
        else:
            _app(conn, size_mb, snippets)
        conn.execute("VACUUM ANALYZE")
        (size,) = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()
    print(f"{name}: {size} in {time.monotonic() - started:.0f}s", flush=True)


def _fill(conn: psycopg.Connection, size_mb: int, insert: str | list[str], batch: int) -> None:
    """Run ``insert`` (each statement with the batch's first and last number) until the
    database holds size_mb."""
    offset = 0
    while True:
        (size,) = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        if size >= size_mb * 1024 * 1024:
            return
        for statement in [insert] if isinstance(insert, str) else insert:
            conn.execute(statement, {"first": offset, "last": offset + batch - 1})
        offset += batch


def _metrics(conn: psycopg.Connection, size_mb: int) -> None:
    conn.execute("CREATE TABLE readings (id bigserial PRIMARY KEY, sensor int, at timestamptz, "
                 "temperature double precision, humidity double precision, pressure double precision, "
                 "voltage double precision, status smallint)")
    _fill(conn, size_mb, """
        INSERT INTO readings (sensor, at, temperature, humidity, pressure, voltage, status)
        SELECT g %% 5000, now() - g * interval '1 second', 15 + random() * 20, random() * 100,
               950 + random() * 100, 3 + random() * 2, (random() * 4)::int
        FROM generate_series(%(first)s::bigint, %(last)s::bigint) g
    """, 500_000)


def _tables(conn: psycopg.Connection, size_mb: int, snippets: list[str]) -> None:
    _load_corpus(conn, snippets)
    for number in range(20):
        conn.execute(f"CREATE TABLE events_{number:02d} (id bigserial PRIMARY KEY, at timestamptz, "
                     "amount numeric(12, 2), note text, payload jsonb)")
    # All 20 tables grow by one batch each before the size is checked, so they stay alike.
    inserts = [f"""
        INSERT INTO events_{number:02d} (at, amount, note, payload)
        SELECT now() - random() * interval '365 days', round((random() * 1000)::numeric, 2), c.body,
               jsonb_build_object('kind', (ARRAY['click','view','purchase'])[1 + (random() * 2)::int],
                                  'ms', (random() * 5000)::int)
        FROM generate_series(%(first)s::bigint, %(last)s::bigint) g JOIN corpus c ON c.id = (g::bigint * 104729) %% 50000
    """ for number in range(20)]
    _fill(conn, size_mb, inserts, 20_000)
    conn.execute("DROP TABLE corpus")


def _load_corpus(conn: psycopg.Connection, snippets: list[str]) -> None:
    conn.execute("CREATE TABLE corpus (id int PRIMARY KEY, body text)")
    with conn.cursor().copy("COPY corpus (id, body) FROM STDIN") as copy:
        for number, text in enumerate(snippets):
            copy.write_row((number, text))


def _app(conn: psycopg.Connection, size_mb: int, snippets: list[str]) -> None:
    _load_corpus(conn, snippets)
    conn.execute("""
        CREATE TABLE customers (id bigserial PRIMARY KEY, uid uuid NOT NULL, email text, name text,
                                created_at timestamptz, profile jsonb);
        CREATE TABLE events (id bigserial PRIMARY KEY, customer_id bigint, uid uuid, at timestamptz,
                             kind text, amount numeric(12, 2), note text, payload jsonb);
        CREATE INDEX ON events (customer_id);
        CREATE INDEX ON events (at);
    """)
    conn.execute("""
        INSERT INTO customers (uid, email, name, created_at, profile)
        SELECT gen_random_uuid(), 'user' || g || '@example' || (g % 97) || '.com',
               initcap(left(c.body, 24)), now() - random() * interval '1500 days',
               jsonb_build_object('plan', (ARRAY['basic','premium','trial'])[1 + g % 3],
                                  'score', round((random() * 100)::numeric, 2),
                                  'tags', jsonb_build_array(g % 13, g % 7))
        FROM generate_series(1, 100000) g JOIN corpus c ON c.id = (g * 7919) % 50000
    """)
    _fill(conn, size_mb, """
        INSERT INTO events (customer_id, uid, at, kind, amount, note, payload)
        SELECT 1 + (random() * 99999)::int, gen_random_uuid(), now() - random() * interval '365 days',
               (ARRAY['click','view','purchase','signup','refund','logout'])[1 + (random() * 5)::int],
               round((random() * 1000)::numeric, 2), c.body,
               jsonb_build_object('ip', '10.' || (random() * 255)::int || '.' || (random() * 255)::int || '.1',
                                  'agent', (ARRAY['firefox','chrome','safari','curl'])[1 + (random() * 3)::int],
                                  'ms', (random() * 5000)::int)
        FROM generate_series(%(first)s::bigint, %(last)s::bigint) g JOIN corpus c ON c.id = (g::bigint * 104729) %% 50000
    """, 200_000)
    conn.execute("DROP TABLE corpus")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:4])
