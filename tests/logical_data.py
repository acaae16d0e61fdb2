"""A realistic shop/CMS database for the logical backup tests, and a way to compare two
databases' contents and schema objects exactly.

Several schemas, an enum, serial, identity and free-standing sequences, foreign keys
(one ON DELETE CASCADE), JSONB, arrays, tsvector, a view, a comment and an index-heavy
table; a few thousand rows (scaled by `k`).
"""

from __future__ import annotations

from typing import Any

from tests.pgcluster import PgCluster

SCHEMA = """
CREATE SCHEMA shop;
CREATE SCHEMA cms;
CREATE TYPE shop.order_status AS ENUM ('pending', 'paid', 'shipped', 'cancelled');
CREATE TABLE shop.customers (
  id bigserial PRIMARY KEY,
  email text NOT NULL UNIQUE,
  name text NOT NULL,
  profile jsonb NOT NULL DEFAULT '{{}}',
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE shop.products (
  id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  sku text NOT NULL UNIQUE,
  title text NOT NULL,
  price numeric(10,2) NOT NULL CHECK (price >= 0),
  tags text[] NOT NULL DEFAULT '{{}}',
  attrs jsonb
);
CREATE TABLE shop.orders (
  id bigserial PRIMARY KEY,
  customer_id bigint NOT NULL REFERENCES shop.customers(id),
  status shop.order_status NOT NULL DEFAULT 'pending',
  total numeric(12,2) NOT NULL,
  placed_at timestamptz NOT NULL
);
COMMENT ON TABLE shop.orders IS 'customer orders';
CREATE TABLE shop.order_items (
  order_id bigint NOT NULL REFERENCES shop.orders(id) ON DELETE CASCADE,
  product_id integer NOT NULL REFERENCES shop.products(id),
  qty integer NOT NULL CHECK (qty > 0),
  price numeric(10,2) NOT NULL,
  PRIMARY KEY (order_id, product_id)
);
CREATE INDEX ON shop.orders (customer_id);
CREATE INDEX ON shop.orders (status, placed_at);
CREATE INDEX ON shop.order_items (product_id);
CREATE INDEX products_attrs_gin ON shop.products USING gin (attrs);
CREATE VIEW shop.order_totals AS
  SELECT o.customer_id, sum(o.total) AS total FROM shop.orders o GROUP BY 1;
CREATE TABLE cms.pages (
  id serial PRIMARY KEY,
  slug text NOT NULL,
  locale char(2) NOT NULL,
  body jsonb NOT NULL,
  search tsvector,
  published boolean NOT NULL DEFAULT false,
  updated_at timestamptz,
  UNIQUE (slug, locale)
);
CREATE INDEX ON cms.pages USING gin (body jsonb_path_ops);
CREATE INDEX ON cms.pages USING gin (search);
CREATE INDEX ON cms.pages (updated_at DESC) WHERE published;
CREATE INDEX ON cms.pages (lower(slug));
CREATE INDEX ON cms.pages (locale, published, updated_at);
CREATE INDEX ON cms.pages USING hash (slug);
CREATE SEQUENCE cms.revision_seq;
CREATE TABLE cms.revisions (
  id bigint PRIMARY KEY DEFAULT nextval('cms.revision_seq'),
  page_id integer NOT NULL REFERENCES cms.pages(id),
  data jsonb,
  note text
);
CREATE TABLE public.audit_log (id bigserial PRIMARY KEY, at timestamptz DEFAULT now(), what text);
INSERT INTO shop.customers (email, name, profile, created_at)
  SELECT 'c' || g || '@example.com', 'Customer ' || g || ' ' || md5(g::text),
         jsonb_build_object('vip', g % 7 = 0, 'n', g, 'tags', jsonb_build_array('a', g % 3)),
         '2026-01-01'::timestamptz - g * interval '1 hour'
  FROM generate_series(1, 100 * {k}) g;
INSERT INTO shop.products (sku, title, price, tags, attrs)
  SELECT 'SKU-' || g, 'Product ' || g, (g % 100) + 0.99, ARRAY['t' || (g % 5), 'x'],
         CASE WHEN g % 4 = 0 THEN NULL ELSE jsonb_build_object('color', g % 3) END
  FROM generate_series(1, 30 * {k}) g;
INSERT INTO shop.orders (customer_id, status, total, placed_at)
  SELECT 1 + g % (100 * {k}),
         (ARRAY['pending','paid','shipped','cancelled'])[1 + g % 4]::shop.order_status,
         g % 500 + 0.5, '2026-01-01'::timestamptz - g * interval '1 minute'
  FROM generate_series(1, 300 * {k}) g;
INSERT INTO shop.order_items (order_id, product_id, qty, price)
  SELECT o, 1 + (o * 7 + k) % (30 * {k}), 1 + k, 9.99
  FROM generate_series(1, 300 * {k}) o, generate_series(0, 1) k;
INSERT INTO cms.pages (slug, locale, body, search, published, updated_at)
  SELECT 'page-' || g, (ARRAY['en','zh'])[1 + g % 2],
         jsonb_build_object('blocks', jsonb_build_array(g, 'text ' || g, '汉字')),
         to_tsvector('simple', 'page number ' || g), g % 3 = 0,
         '2026-01-01'::timestamptz - g * interval '1 day'
  FROM generate_series(1, 150 * {k}) g;
INSERT INTO cms.revisions (page_id, data, note)
  SELECT 1 + g % (150 * {k}), jsonb_build_object('rev', g), CASE WHEN g % 2 = 0 THEN 'n' END
  FROM generate_series(1, 200 * {k}) g;
INSERT INTO public.audit_log (what) SELECT 'event ' || g FROM generate_series(1, 50 * {k}) g;
"""

TABLES = (
    "cms.pages",
    "cms.revisions",
    "public.audit_log",
    "shop.customers",
    "shop.order_items",
    "shop.orders",
    "shop.products",
)


def create_database(pg: PgCluster, name: str, k: int = 10) -> None:
    """k=10: about 14,000 rows over 7 tables."""
    pg.sql(f'CREATE DATABASE "{name}"')
    with pg.connect(name) as conn:
        conn.execute(SCHEMA.format(k=k))  # type: ignore[arg-type]


def table_contents(pg: PgCluster, dbname: str, table: str) -> tuple[int, str]:
    """(rows, md5 over every row's text form in a fixed order)."""
    row = pg.sql(
        f"SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) "
        f"FROM {table} t",
        dbname=dbname,
    )[0]
    return int(row[0]), str(row[1])


def fingerprint(pg: PgCluster, dbname: str) -> dict[str, Any]:
    """Everything a restore must bring back: contents of each table, sequences, indexes,
    constraints, enum labels, views and comments."""
    user = "NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
    tables = [
        f"{s}.{n}"
        for s, n in pg.sql(
            f"SELECT schemaname, tablename FROM pg_tables WHERE schemaname {user} ORDER BY 1, 2",
            dbname=dbname,
        )
    ]
    return {
        "tables": {t: table_contents(pg, dbname, t) for t in tables},
        "sequences": pg.sql(
            "SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2",
            dbname=dbname,
        ),
        "indexes": pg.sql(
            f"SELECT schemaname, indexname, indexdef FROM pg_indexes WHERE schemaname {user} "
            "ORDER BY 1, 2",
            dbname=dbname,
        ),
        "constraints": pg.sql(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            f"FROM pg_constraint WHERE connamespace::regnamespace::text {user} ORDER BY 1, 2",
            dbname=dbname,
        ),
        "enums": pg.sql(
            "SELECT enumtypid::regtype::text, array_agg(enumlabel::text ORDER BY enumsortorder) "
            "FROM pg_enum GROUP BY 1 ORDER BY 1",
            dbname=dbname,
        ),
        "views": pg.sql(
            f"SELECT schemaname, viewname, definition FROM pg_views WHERE schemaname {user} "
            "ORDER BY 1, 2",
            dbname=dbname,
        ),
        "comments": pg.sql(
            "SELECT objoid::regclass::text, description FROM pg_description "
            "WHERE classoid = 'pg_class'::regclass ORDER BY 1",
            dbname=dbname,
        ),
    }


def databases(pg: PgCluster) -> set[str]:
    return {r[0] for r in pg.sql("SELECT datname FROM pg_database")}
