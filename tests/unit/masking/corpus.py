"""Masking-bypass attempts as data, for the unit tests here and for end-to-end runs through
real clients against real MariaDB and PostgreSQL (create the schema with ``MYSQL_DDL`` /
``POSTGRES_DDL``, apply ``MASKING`` to the policy set, run each case as user ``alice``).

Each case says what must happen: ``mask`` (the result columns in ``masked`` are masked, with
the masking named, and the columns in ``clear`` are not) or ``deny`` (with a message that
contains ``deny_contains``). The ideas come from public reports of masking bypasses in other
tools (dynamic data masking in SQL Server, MySQL Enterprise/ProxySQL/Maxscale masking
filters, PostgreSQL Anonymizer, Snowflake masking policies): functions over a masked column,
aliases and derived tables, UNION with another table, CTEs, views, aggregation, JSON, casts,
CASE, inference through WHERE/ORDER BY (binary search on the value), copying into another
table, and comments or quoting that hide a column from a name-based filter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dbward.sql.lineage import Catalog

MYSQL_DDL = """
CREATE DATABASE IF NOT EXISTS shop;
USE shop;
CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(50), phone VARCHAR(20), email VARCHAR(80),
                        rrn VARCHAR(20), city VARCHAR(40));
CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT, item VARCHAR(40), note VARCHAR(80));
CREATE TABLE archive (a VARCHAR(80), b VARCHAR(80));
CREATE VIEW v_contacts AS SELECT id, name, phone FROM customers;
CREATE VIEW v_nested AS SELECT id, concat(phone, '') AS p FROM v_contacts;
INSERT INTO customers VALUES (1, 'Kim Minji', '010-1234-5678', 'minji@example.com', '900101-1234567', 'Seoul'),
                             (2, 'Lee Jun', '010-9876-5432', 'jun.lee@example.org', '850505-2345678', 'Busan');
INSERT INTO orders VALUES (1, 1, 'book', 'leave at door'), (2, 2, 'pen', NULL);
"""

POSTGRES_DDL = """
CREATE TABLE public.customers (id int PRIMARY KEY, name text, phone text, email text, rrn text, city text);
CREATE TABLE public.orders (id int PRIMARY KEY, customer_id int, item text, note text);
CREATE TABLE public.archive (a text, b text);
CREATE VIEW public.v_contacts AS SELECT id, name, phone FROM public.customers;
CREATE VIEW public.v_nested AS SELECT id, concat(phone, '') AS p FROM public.v_contacts;
CREATE SCHEMA crm;
CREATE TABLE crm."Contacts" (id int, "Phone" text, label text);
CREATE SCHEMA other;
CREATE TABLE other.customers (id int, phone text);
INSERT INTO public.customers VALUES (1, 'Kim Minji', '010-1234-5678', 'minji@example.com', '900101-1234567', 'Seoul'),
                                    (2, 'Lee Jun', '010-9876-5432', 'jun.lee@example.org', '850505-2345678', 'Busan');
INSERT INTO public.orders VALUES (1, 1, 'book', 'leave at door'), (2, 2, 'pen', NULL);
INSERT INTO crm."Contacts" VALUES (1, '010-1111-2222', 'home');
INSERT INTO other.customers VALUES (1, 'not personal');
"""

# the `masking:` section of the policy, as `dbward apply` reads it
MASKING: dict[str, object] = {
    "patterns": [
        {"name": "label_code", "regex": r"[A-Z]{2}\d{4}", "algorithm": "keep_first:1"},
    ],
    "rules": [
        {"name": "mask-phone", "table": "customers", "schema": "shop", "column": "phone", "pattern": "phone"},
        {
            "name": "mask-phone-pg",
            "table": "customers",
            "schema": "public",
            "column": "phone",
            "pattern": "phone",
        },
        {"name": "mask-email", "table": "customers", "column": "email", "pattern": "email"},
        {"name": "mask-rrn", "table": "customers", "column": "rrn", "pattern": "rrn", "priority": 10},
        {"name": "mask-crm-phone", "schema": "crm", "column": "phone", "pattern": "phone"},
        {
            "name": "redact-crm-label",
            "schema": "crm",
            "table": "Contacts",
            "column": "label",
            "algorithm": "redact",
        },
    ],
}

_CUSTOMERS = ("id", "name", "phone", "email", "rrn", "city")
_ORDERS = ("id", "customer_id", "item", "note")

MYSQL_CATALOG = Catalog(
    {
        ("shop", "customers"): _CUSTOMERS,
        ("shop", "orders"): _ORDERS,
        ("shop", "archive"): ("a", "b"),
        ("shop", "v_contacts"): ("id", "name", "phone"),
        ("shop", "v_nested"): ("id", "p"),
    },
    {
        ("shop", "v_contacts"): "select `customers`.`id` AS `id`,`customers`.`name` AS `name`,"
        "`customers`.`phone` AS `phone` from `shop`.`customers`",
        ("shop", "v_nested"): "select `v_contacts`.`id` AS `id`,concat(`v_contacts`.`phone`,'') AS `p` "
        "from `shop`.`v_contacts`",
    },
    version=1,
)

POSTGRES_CATALOG = Catalog(
    {
        ("public", "customers"): _CUSTOMERS,
        ("public", "orders"): _ORDERS,
        ("public", "archive"): ("a", "b"),
        ("public", "v_contacts"): ("id", "name", "phone"),
        ("public", "v_nested"): ("id", "p"),
        ("crm", "Contacts"): ("id", "Phone", "label"),
        ("other", "customers"): ("id", "phone"),
    },
    {
        (
            "public",
            "v_contacts",
        ): "SELECT customers.id, customers.name, customers.phone FROM public.customers",
        (
            "public",
            "v_nested",
        ): "SELECT v_contacts.id, concat(v_contacts.phone, '') AS p FROM public.v_contacts",
    },
    version=1,
    database="shop",
)

PHONE = "pattern phone"
EMAIL = "pattern email"
RRN = "pattern rrn"
FULL = "full"


@dataclass(frozen=True)
class BypassCase:
    id: str
    dialect: Literal["mysql", "postgres"]
    sql: str
    expect: Literal["mask", "deny"]
    masked: dict[int, str] = field(default_factory=dict)  # 0-based result column -> masking
    clear: tuple[int, ...] = ()  # result columns that must come back unmasked
    deny_contains: str = ""
    search_path: tuple[str, ...] = ()
    note: str = ""


def _m(id_: str, sql: str, masked: dict[int, str], clear: tuple[int, ...] = (), **kw: object) -> BypassCase:
    return BypassCase(id_, "mysql", sql, "mask", masked, clear, **kw)  # type: ignore[arg-type]


def _p(id_: str, sql: str, masked: dict[int, str], clear: tuple[int, ...] = (), **kw: object) -> BypassCase:
    return BypassCase(id_, "postgres", sql, "mask", masked, clear, **kw)  # type: ignore[arg-type]


def _md(id_: str, sql: str, contains: str, **kw: object) -> BypassCase:
    return BypassCase(id_, "mysql", sql, "deny", deny_contains=contains, **kw)  # type: ignore[arg-type]


def _pd(id_: str, sql: str, contains: str, **kw: object) -> BypassCase:
    return BypassCase(id_, "postgres", sql, "deny", deny_contains=contains, **kw)  # type: ignore[arg-type]


INFER = "filter, join, sort or group"
COPIES = "writing masked columns elsewhere is not allowed"
UNRESOLVED = "cannot establish the origin"

CASES: tuple[BypassCase, ...] = (
    # ---------------------------------------------------------------- MySQL / MariaDB
    _m("my-plain", "SELECT id, name, phone FROM customers", {2: PHONE}, (0, 1)),
    _m("my-star", "SELECT * FROM customers", {2: PHONE, 3: EMAIL, 4: RRN}, (0, 1, 5)),
    _m(
        "my-table-star",
        "SELECT o.item, c.* FROM orders o JOIN customers c ON c.id = o.customer_id",
        {3: PHONE, 4: EMAIL, 5: RRN},
        (0, 1, 2, 6),
    ),
    _m("my-alias", "SELECT phone AS harmless, name AS phone FROM customers", {0: PHONE}, (1,)),
    _m("my-upper-case", "SELECT PHONE, Email FROM CUSTOMERS", {0: PHONE, 1: EMAIL}),
    _m("my-backticks", "SELECT `Phone` FROM `shop`.`Customers`", {0: PHONE}),
    _m("my-qualified", "SELECT shop.customers.phone FROM shop.customers", {0: PHONE}),
    _m("my-concat", "SELECT concat(phone, '') FROM customers", {0: FULL}),
    _m("my-concat-ws", "SELECT concat_ws('-', name, email) FROM customers", {0: FULL}),
    _m("my-lower", "SELECT lower(email), upper(name) FROM customers", {0: FULL}, (1,)),
    _m("my-substr", "SELECT substr(rrn, 1, 6), substring(rrn, 8) FROM customers", {0: FULL, 1: FULL}),
    _m("my-reverse", "SELECT reverse(phone) FROM customers", {0: FULL}),
    _m("my-hex", "SELECT hex(phone), to_base64(email) FROM customers", {0: FULL, 1: FULL}),
    _m("my-cast", "SELECT CAST(phone AS CHAR), CONVERT(email, CHAR) FROM customers", {0: PHONE, 1: EMAIL}),
    _m("my-case", "SELECT CASE WHEN id > 0 THEN phone ELSE name END FROM customers", {0: PHONE}),
    _m(
        "my-if-ifnull",
        "SELECT IF(id = 1, email, 'x'), IFNULL(phone, '-') FROM customers",
        {0: EMAIL, 1: PHONE},
    ),
    _m("my-coalesce", "SELECT COALESCE(NULL, rrn) FROM customers", {0: RRN}),
    _m("my-derived", "SELECT x FROM (SELECT phone AS x FROM customers) AS t", {0: PHONE}),
    _m(
        "my-nested-derived",
        "SELECT z FROM (SELECT y AS z FROM (SELECT concat(email, '!') AS y FROM customers) a) b",
        {0: FULL},
    ),
    _m(
        "my-scalar-subquery",
        "SELECT o.id, (SELECT c.phone FROM customers c WHERE c.id = o.customer_id) FROM orders o",
        {1: PHONE},
        (0,),
    ),
    _m("my-cte", "WITH c AS (SELECT id, email FROM customers) SELECT email, id FROM c", {0: EMAIL}, (1,)),
    _m(
        "my-cte-chain",
        "WITH a AS (SELECT phone AS p FROM customers), b AS (SELECT p AS q FROM a) SELECT q FROM b",
        {0: PHONE},
    ),
    _m(
        "my-recursive-cte",
        "WITH RECURSIVE r (n, v) AS (SELECT 1, name FROM customers WHERE id = 1 UNION ALL "
        "SELECT n + 1, (SELECT phone FROM customers WHERE id = 2) FROM r WHERE n < 2) SELECT v FROM r",
        {0: PHONE},
    ),
    _m("my-union", "SELECT name FROM customers UNION SELECT phone FROM customers", {0: PHONE}),
    _m(
        "my-union-other-table",
        "SELECT item, note FROM orders UNION ALL SELECT email, name FROM customers",
        {0: EMAIL},
        (1,),
    ),
    _m("my-union-two-patterns", "SELECT phone FROM customers UNION SELECT email FROM customers", {0: FULL}),
    _m("my-view", "SELECT * FROM v_contacts", {2: PHONE}, (0, 1)),
    _m("my-view-of-view", "SELECT p, id FROM v_nested", {0: FULL}, (1,)),
    _m("my-group-concat", "SELECT group_concat(phone SEPARATOR ',') FROM customers", {0: FULL}),
    _m("my-max", "SELECT max(email), min(phone), count(*) FROM customers", {0: EMAIL, 1: PHONE}, (2,)),
    _m(
        "my-json-object",
        "SELECT json_object('p', phone), json_arrayagg(email) FROM customers",
        {0: FULL, 1: FULL},
    ),
    _m(
        "my-json-extract",
        "SELECT json_unquote(json_extract(json_object('r', rrn), '$.r')) FROM customers",
        {0: FULL},
    ),
    _m("my-window-value", "SELECT id, lag(phone) OVER (ORDER BY id) FROM customers", {1: PHONE}, (0,)),
    _m("my-exec-comment", "SELECT id /*!, phone */ FROM customers", {1: PHONE}, (0,)),
    _m("my-versioned-exec-comment", "SELECT id /*!50000 , email */ FROM customers", {1: EMAIL}, (0,)),
    _m(
        "my-comment-noise", "SELECT /* phone */ name, -- \n phone FROM customers # trailing", {1: PHONE}, (0,)
    ),
    _md("my-where-like", "SELECT name FROM customers WHERE rrn LIKE '9001%'", INFER),
    _md("my-where-binary-search", "SELECT count(*) FROM customers WHERE phone > '010-5'", INFER),
    _md("my-order-by", "SELECT name FROM customers ORDER BY phone", INFER),
    _md("my-order-by-position", "SELECT name, email FROM customers ORDER BY 2", INFER),
    _md("my-group-by", "SELECT count(*) FROM customers GROUP BY substr(rrn, 1, 2)", INFER),
    _md("my-join-on", "SELECT o.item FROM orders o JOIN customers c ON c.phone = o.note", INFER),
    _md("my-case-sum", "SELECT sum(CASE WHEN rrn LIKE '9%' THEN 1 ELSE 0 END) FROM customers", INFER),
    _md("my-sleep-oracle", "SELECT sleep(IF(substr(phone, 1, 1) = '0', 1, 0)) FROM customers", INFER),
    _md(
        "my-error-xpath",
        "SELECT extractvalue(1, concat(0x7e, (SELECT phone FROM customers LIMIT 1)))",
        UNRESOLVED,
    ),
    _md(
        "my-exists",
        "SELECT id FROM orders o WHERE EXISTS (SELECT 1 FROM customers c WHERE c.email LIKE 'a%')",
        INFER,
    ),
    _md("my-insert-select", "INSERT INTO archive (a, b) SELECT phone, name FROM customers", COPIES),
    _md("my-create-table-as", "CREATE TABLE leak AS SELECT email FROM customers", COPIES),
    _md("my-select-into-var", "SELECT phone INTO @p FROM customers LIMIT 1", COPIES),
    _md("my-assign-var", "SELECT @p := phone FROM customers", COPIES),
    _md("my-set-var", "SET @p = (SELECT email FROM customers LIMIT 1)", COPIES),
    _md("my-update-copy", "UPDATE customers SET name = phone", COPIES),
    _md("my-into-outfile", "SELECT phone FROM customers INTO OUTFILE '/tmp/leak.txt'", COPIES),
    _md(
        "my-insert-values-subquery",
        "INSERT INTO archive VALUES ((SELECT phone FROM customers LIMIT 1), 'x')",
        COPIES,
    ),
    _md("my-update-join", "UPDATE archive a JOIN customers c ON c.name = a.b SET a.a = c.phone", COPIES),
    _md("my-create-table-select", "CREATE TABLE leak2 SELECT rrn FROM customers", COPIES),
    _md("my-stored-function", "SELECT get_phone(1)", UNRESOLVED),
    _md("my-call", "CALL dump_customers()", UNRESOLVED),
    _md("my-unknown-table", "SELECT * FROM customers_copy_made_elsewhere", UNRESOLVED),
    _md("my-column-stats", "SELECT min_value, max_value FROM mysql.column_stats", "statistics"),
    _md("my-handler", "HANDLER customers READ FIRST", UNRESOLVED),
    _md("my-replace-select", "REPLACE INTO archive SELECT phone, name FROM customers", UNRESOLVED),
    _md("my-prepare-from-var", "PREPARE s FROM @q", UNRESOLVED),
    _md("my-prepare", "PREPARE s FROM 'SELECT phone FROM customers'", "through EXECUTE"),
    # ---------------------------------------------------------------- PostgreSQL
    _p("pg-plain", "SELECT id, phone, city FROM customers", {1: PHONE}, (0, 2)),
    _p("pg-star", "SELECT * FROM public.customers", {2: PHONE, 3: EMAIL, 4: RRN}, (0, 1, 5)),
    _p("pg-three-part", "SELECT phone FROM shop.public.customers", {0: PHONE}),
    _p("pg-concat-op", "SELECT phone || '' , name FROM customers", {0: FULL}, (1,)),
    _p(
        "pg-cast",
        "SELECT phone::text, email::varchar(200), rrn::bytea FROM customers",
        {0: PHONE, 1: EMAIL, 2: RRN},
    ),
    _p(
        "pg-substring",
        "SELECT substring(rrn from 1 for 6), left(phone, 3), right(email, 5) FROM customers",
        {0: FULL, 1: FULL, 2: FULL},
    ),
    _p("pg-string-agg", "SELECT string_agg(phone, ','), array_agg(email) FROM customers", {0: FULL, 1: FULL}),
    _p("pg-json-agg", "SELECT json_agg(c) FROM customers c", {0: FULL}),
    _p("pg-row-to-json", "SELECT row_to_json(c), c.id FROM customers c", {0: FULL}, (1,)),
    _p("pg-whole-row", "SELECT c FROM customers c", {0: FULL}),
    _p("pg-to-jsonb-star", "SELECT to_jsonb(c.*) ->> 'phone' FROM customers c", {0: FULL}),
    _p("pg-jsonb-build", "SELECT jsonb_build_object('e', email) ->> 'e' FROM customers", {0: FULL}),
    _p("pg-lateral", "SELECT l.x FROM customers c, LATERAL (SELECT c.phone AS x) l", {0: PHONE}),
    _p("pg-unnest-array", "SELECT (array[phone, name])[1] FROM customers", {0: FULL}),
    _p("pg-window-first", "SELECT first_value(email) OVER (), id FROM customers", {0: EMAIL}, (1,)),
    _p("pg-intersect", "SELECT phone FROM customers INTERSECT SELECT note FROM orders", {0: PHONE}),
    _p("pg-except", "SELECT note FROM orders EXCEPT SELECT email FROM customers", {0: EMAIL}),
    _p("pg-view", "SELECT phone FROM v_contacts", {0: PHONE}),
    _p("pg-view-of-view", "SELECT * FROM v_nested", {1: FULL}, (0,)),
    _p("pg-quoted-odd-case", 'SELECT "Phone", label, id FROM crm."Contacts"', {0: PHONE, 1: "redact"}, (2,)),
    _p("pg-search-path-masked", "SELECT phone FROM customers", {0: PHONE}, search_path=("public", "other")),
    _p(
        "pg-search-path-other",
        "SELECT phone, id FROM customers",
        {0: PHONE},
        (1,),
        search_path=("other", "public"),
        note="the path can change under dbward (set_config): same-named tables count too",
    ),
    _p("pg-qualified-other-schema", "SELECT phone, id FROM other.customers", {}, (0, 1)),
    _p("pg-search-path-crm", 'SELECT "Phone" FROM "Contacts"', {0: PHONE}, search_path=("crm",)),
    _p("pg-copy-select", "COPY (SELECT name, email FROM customers) TO STDOUT", {1: EMAIL}, (0,)),
    _p(
        "pg-copy-table", "COPY customers TO STDOUT WITH (FORMAT csv)", {2: PHONE, 3: EMAIL, 4: RRN}, (0, 1, 5)
    ),
    _p("pg-copy-columns", "COPY customers (id, rrn) TO STDOUT", {1: RRN}, (0,)),
    _p(
        "pg-returning-insert",
        "INSERT INTO customers (id, phone) VALUES (9, '010-0000-0000') RETURNING id, phone",
        {1: PHONE},
        (0,),
    ),
    _p("pg-table-stmt", "TABLE customers", {2: PHONE, 3: EMAIL, 4: RRN}, (0, 1, 5)),
    _p("pg-distinct", "SELECT DISTINCT email FROM customers", {0: EMAIL}),
    _p("pg-coalesce-nullif", "SELECT coalesce(nullif(phone, ''), 'none') FROM customers", {0: PHONE}),
    _p("pg-cast-error", "SELECT phone::int FROM customers", {0: PHONE}, note="the error quotes the value"),
    _pd("pg-div-zero-oracle", "SELECT 1 / (CASE WHEN rrn LIKE '9%' THEN 0 ELSE 1 END) FROM customers", INFER),
    _pd("pg-sleep-oracle", "SELECT pg_sleep(length(phone) / 10.0) FROM customers", INFER),
    _p("pg-array-subquery", "SELECT ARRAY(SELECT phone FROM customers)", {0: FULL}),
    _p(
        "pg-values-subquery",
        "SELECT * FROM (VALUES ((SELECT email FROM customers LIMIT 1))) AS v(x)",
        {0: EMAIL},
    ),
    _pd(
        "pg-merge",
        "MERGE INTO archive a USING customers c ON a.b = c.name WHEN MATCHED THEN UPDATE SET a = c.phone",
        UNRESOLVED,
    ),
    _pd("pg-explain-analyze-filter", "EXPLAIN ANALYZE SELECT id FROM customers WHERE rrn LIKE '9%'", INFER),
    _pd("pg-where", "SELECT name FROM customers WHERE rrn LIKE '9001%'", INFER),
    _pd("pg-order-by-expr", "SELECT id FROM customers ORDER BY substr(phone, 5, 1)", INFER),
    _pd("pg-window-partition", "SELECT id, row_number() OVER (PARTITION BY email) FROM customers", INFER),
    _pd("pg-having", "SELECT city FROM customers GROUP BY city HAVING max(rrn) > '9'", INFER),
    _pd("pg-in-subquery", "SELECT item FROM orders WHERE note IN (SELECT phone FROM customers)", INFER),
    _pd(
        "pg-derived-filter",
        "SELECT n FROM (SELECT name AS n FROM customers WHERE phone LIKE '010-1%') t",
        INFER,
    ),
    _pd("pg-count-distinct", "SELECT count(DISTINCT rrn) FROM customers", INFER),
    _pd(
        "pg-update-where",
        "UPDATE orders SET note = 'x' WHERE customer_id IN (SELECT id FROM customers WHERE rrn LIKE '9%')",
        INFER,
    ),
    _pd("pg-delete-returning-filter", "DELETE FROM customers WHERE email LIKE 'a%' RETURNING id", INFER),
    _pd("pg-insert-select", "INSERT INTO archive SELECT email, city FROM customers", COPIES),
    _pd("pg-create-table-as", "CREATE TABLE leak AS SELECT rrn FROM customers", COPIES),
    _pd("pg-select-into", "SELECT phone INTO leak FROM customers", COPIES),
    _pd("pg-materialized-view", "CREATE MATERIALIZED VIEW mv AS SELECT phone FROM customers", COPIES),
    _pd("pg-update-subquery", "UPDATE archive SET a = (SELECT phone FROM customers LIMIT 1)", COPIES),
    _pd(
        "pg-cte-insert",
        "WITH x AS (SELECT email FROM customers) INSERT INTO archive (a) SELECT email FROM x",
        COPIES,
    ),
    _pd("pg-copy-to-file", "COPY (SELECT phone FROM customers) TO '/tmp/leak.csv'", COPIES),
    _pd("pg-set-config", "SELECT set_config('my.leak', phone, false) FROM customers", COPIES),
    _pd("pg-declare-cursor", "DECLARE c CURSOR FOR SELECT phone FROM customers", "through FETCH"),
    _pd("pg-user-function", "SELECT leak_phone(id) FROM customers", UNRESOLVED),
    _pd("pg-table-function", "SELECT * FROM dump_all()", UNRESOLVED),
    _pd("pg-do-block", "DO $$ BEGIN PERFORM 1; END $$", UNRESOLVED),
    _pd("pg-unknown-table", "SELECT * FROM customers_backup", UNRESOLVED),
    _pd("pg-stats", "SELECT most_common_vals FROM pg_stats WHERE tablename = 'customers'", "statistics"),
    _pd("pg-query-to-xml", "SELECT query_to_xml('SELECT phone FROM customers', true, false, '')", UNRESOLVED),
    _pd(
        "pg-renamed-table",
        "SELECT phone FROM public.clients",
        "not in dbward's catalog",
        note="stale catalog",
    ),
    _p(
        "pg-system-catalog",
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace",
        {},
    ),
    _pd("pg-dml-cte", "WITH d AS (DELETE FROM customers RETURNING *) SELECT * FROM d", UNRESOLVED),
)
