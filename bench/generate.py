"""Create a benchmark database with realistic data: random text built from words,
uuids, timestamps, amounts, e-mail addresses and jsonb; not pgbench's blank filler.

    python bench/generate.py NAME SIZE_MB     (connection from DB_HOST, DB_PORT, DB_USER, DB_PASSWORD)
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


def main(name: str, size_mb: int) -> None:
    rng = random.Random(42)
    # 50,000 snippets of 20-200 words: rows pick them by a hash of their number.
    snippets = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 30))) for _ in range(50_000)]
    with connect("postgres") as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    started = time.monotonic()
    with connect(name) as conn:
        conn.execute("CREATE TABLE corpus (id int PRIMARY KEY, body text)")
        with conn.cursor().copy("COPY corpus (id, body) FROM STDIN") as copy:
            for number, text in enumerate(snippets):
                copy.write_row((number, text))
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
                                      'score', round((random() * 100)::numeric, 2), 'tags', jsonb_build_array(g % 13, g % 7))
            FROM generate_series(1, 100000) g JOIN corpus c ON c.id = (g * 7919) % 50000
        """)
        batch = 200_000
        offset = 0
        while True:
            (size,) = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            if size >= size_mb * 1024 * 1024:
                break
            conn.execute("""
                INSERT INTO events (customer_id, uid, at, kind, amount, note, payload)
                SELECT 1 + (random() * 99999)::int, gen_random_uuid(), now() - random() * interval '365 days',
                       (ARRAY['click','view','purchase','signup','refund','logout'])[1 + (random() * 5)::int],
                       round((random() * 1000)::numeric, 2), c.body,
                       jsonb_build_object('ip', '10.' || (random() * 255)::int || '.' || (random() * 255)::int || '.1',
                                          'agent', (ARRAY['firefox','chrome','safari','curl'])[1 + (random() * 3)::int],
                                          'ms', (random() * 5000)::int)
                FROM generate_series(%s, %s) g JOIN corpus c ON c.id = (g::bigint * 104729) %% 50000
            """, (offset, offset + batch - 1))
            offset += batch
        conn.execute("DROP TABLE corpus")
        conn.execute("VACUUM ANALYZE")
        (size,) = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()
    print(f"{name}: {size} in {time.monotonic() - started:.0f}s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
