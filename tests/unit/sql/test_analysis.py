"""analyze(): kinds, objects, flags and fingerprints across MySQL and PostgreSQL."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbward.sql import ObjectType, StatementKind, analyze, split_statements
from dbward.sql.model import Analysis

K = StatementKind


def my(sql: str, **kw: object) -> Analysis:
    return analyze(sql, "mysql", database=kw.pop("database", "app"), **kw)  # type: ignore[arg-type]


def pg(sql: str, **kw: object) -> Analysis:
    return analyze(sql, "postgres", database=kw.pop("database", "appdb"), **kw)  # type: ignore[arg-type]


def acc(a: Analysis) -> set[tuple[str, str]]:
    """(kind, qualified object) pairs."""
    return {(x.kind.value, x.obj.qualified) for x in a.accesses}


# ---------------------------------------------------------------------------- kinds


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("SELECT 1", K.SELECT),
        ("select * from t", K.SELECT),
        ("INSERT INTO t VALUES (1)", K.INSERT),
        ("UPDATE t SET a = 1 WHERE id = 2", K.UPDATE),
        ("DELETE FROM t WHERE id = 2", K.DELETE),
        ("REPLACE INTO t VALUES (1)", K.UPSERT),
        ("INSERT INTO t VALUES (1) ON DUPLICATE KEY UPDATE a = 1", K.UPSERT),
        ("CREATE TABLE t (id INT)", K.CREATE),
        ("ALTER TABLE t ADD COLUMN b INT", K.ALTER),
        ("DROP TABLE t", K.DROP),
        ("TRUNCATE TABLE t", K.TRUNCATE),
        ("RENAME TABLE a TO b", K.RENAME),
        ("GRANT SELECT ON app.* TO u", K.GRANT),
        ("REVOKE SELECT ON app.* FROM u", K.REVOKE),
        ("BEGIN", K.TRANSACTION),
        ("START TRANSACTION READ ONLY", K.TRANSACTION),
        ("COMMIT", K.TRANSACTION),
        ("ROLLBACK TO SAVEPOINT a", K.TRANSACTION),
        ("SAVEPOINT a", K.TRANSACTION),
        ("RELEASE SAVEPOINT a", K.TRANSACTION),
        ("XA START 'x'", K.TRANSACTION),
        ("SET autocommit = 1", K.SET),
        ("SET NAMES utf8mb4", K.SET),
        ("SET SESSION sql_mode = 'STRICT_ALL_TABLES'", K.SET),
        ("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", K.TRANSACTION),
        ("SET GLOBAL max_connections = 10", K.SET_GLOBAL),
        ("SET @@global.max_connections = 10", K.SET_GLOBAL),
        ("SET PERSIST max_connections = 10", K.SET_GLOBAL),
        ("SET ROLE ALL", K.SET_ROLE),
        ("SET DEFAULT ROLE ALL TO u", K.SET_ROLE),
        ("SET PASSWORD = 'x'", K.ADMIN),
        ("SHOW TABLES", K.SHOW),
        ("SHOW CREATE TABLE t", K.SHOW),
        ("DESCRIBE t", K.SHOW),
        ("DESC t", K.SHOW),
        ("USE db1", K.USE),
        ("EXPLAIN SELECT * FROM t", K.EXPLAIN),
        ("EXPLAIN FORMAT=JSON DELETE FROM t", K.EXPLAIN),
        ("DESCRIBE DELETE FROM t", K.EXPLAIN),
        ("EXPLAIN t", K.SHOW),
        ("CALL p(1)", K.CALL),
        ("PREPARE s FROM 'SELECT 1'", K.EXECUTE),
        ("EXECUTE s USING @a", K.EXECUTE),
        ("DEALLOCATE PREPARE s", K.EXECUTE),
        ("LOAD DATA INFILE '/tmp/x' INTO TABLE t", K.LOAD_DATA),
        ("LOAD DATA LOCAL INFILE 'x.csv' INTO TABLE t", K.LOAD_DATA),
        ("LOCK TABLES t READ", K.LOCK),
        ("UNLOCK TABLES", K.SESSION),
        ("OPTIMIZE TABLE t", K.MAINTENANCE),
        ("ANALYZE TABLE t", K.MAINTENANCE),
        ("FLUSH PRIVILEGES", K.ADMIN),
        ("KILL 42", K.ADMIN),
        ("CREATE USER u IDENTIFIED BY 'x'", K.ADMIN),
        ("DROP USER u", K.ADMIN),
        ("ALTER USER u IDENTIFIED BY 'y'", K.ADMIN),
        ("CREATE DEFINER=`root`@`%` EVENT e ON SCHEDULE EVERY 1 DAY DO DELETE FROM t", K.ADMIN),
        ("INSTALL PLUGIN x SONAME 'x.so'", K.ADMIN),
        ("DO SLEEP(1)", K.SELECT),
        ("BEGIN NOT ATOMIC DELETE FROM t; END", K.PROCEDURAL),
        ("HANDLER t OPEN", K.UNKNOWN),
        ("FROBNICATE everything", K.UNKNOWN),
        ("SELECT FROM WHERE", K.UNKNOWN),
        ("SELECT 'unterminated", K.UNKNOWN),
        ("", K.UNKNOWN),
        ("/* just a comment */", K.UNKNOWN),
    ],
)
def test_mysql_kinds(sql: str, kind: StatementKind) -> None:
    a = my(sql)
    assert a.kind is kind, (a.kind, a.reasons)
    if kind is K.UNKNOWN:
        assert a.reasons, "an UNKNOWN statement says why"


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("SELECT 1", K.SELECT),
        ("VALUES (1), (2)", K.SELECT),
        ("(SELECT 1) UNION (SELECT 2)", K.SELECT),
        ("INSERT INTO t VALUES (1) RETURNING id", K.INSERT),
        ("INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = 1", K.UPSERT),
        ("INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING", K.UPSERT),
        ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = 1", K.MERGE),
        ("CREATE TABLE t (id int)", K.CREATE),
        ("CREATE OR REPLACE VIEW v AS SELECT 1", K.CREATE),
        ("CREATE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql", K.CREATE),
        ("CREATE EXTENSION pgcrypto", K.ADMIN),
        ("CREATE ROLE r", K.ADMIN),
        ("ALTER SYSTEM SET work_mem = '1GB'", K.ADMIN),
        ("COMMENT ON TABLE t IS 'x'", K.ALTER),
        ("BEGIN", K.TRANSACTION),
        ("BEGIN ISOLATION LEVEL SERIALIZABLE", K.TRANSACTION),
        ("END", K.TRANSACTION),
        ("ABORT", K.TRANSACTION),
        ("PREPARE TRANSACTION 'x'", K.TRANSACTION),
        ("COMMIT PREPARED 'x'", K.TRANSACTION),
        ("SAVEPOINT a", K.TRANSACTION),
        ("SET search_path TO a, b", K.SET),
        ("SET LOCAL statement_timeout = 5", K.SET),
        ("SET ROLE admin", K.SET_ROLE),
        ("SET SESSION ROLE admin", K.SET_ROLE),
        ("SET SESSION AUTHORIZATION postgres", K.SET_ROLE),
        ("RESET ROLE", K.SET_ROLE),
        ("RESET ALL", K.SET),
        ("DISCARD ALL", K.SESSION),
        ("LISTEN ch", K.SESSION),
        ("NOTIFY ch", K.NOTIFY),
        ("SHOW search_path", K.SHOW),
        ("EXPLAIN SELECT 1", K.EXPLAIN),
        ("EXPLAIN (FORMAT JSON) DELETE FROM t", K.EXPLAIN),
        ("CALL p(1)", K.CALL),
        ("PREPARE p (int) AS SELECT $1", K.EXECUTE),
        ("EXECUTE p(1)", K.EXECUTE),
        ("DEALLOCATE p", K.EXECUTE),
        ("COPY t FROM STDIN", K.COPY_FROM),
        ("COPY t TO STDOUT", K.COPY_TO),
        ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", K.LOCK),
        ("VACUUM ANALYZE t", K.MAINTENANCE),
        ("ANALYZE t", K.MAINTENANCE),
        ("REFRESH MATERIALIZED VIEW v", K.MAINTENANCE),
        ("CHECKPOINT", K.ADMIN),
        ("DO $$ BEGIN DELETE FROM t; END $$", K.PROCEDURAL),
        ("FETCH 10 FROM c", K.SESSION),
        ("USE db", K.UNKNOWN),  # not a PostgreSQL statement
        ("SELEC 1", K.UNKNOWN),
    ],
)
def test_postgres_kinds(sql: str, kind: StatementKind) -> None:
    a = pg(sql)
    assert a.kind is kind, (a.kind, a.reasons)


# ---------------------------------------------------------------------------- objects


def test_mysql_objects_are_qualified_with_the_current_database() -> None:
    a = my("SELECT a FROM `orders` o JOIN `crm`.`customers` c ON c.id = o.cid")
    assert acc(a) == {("SELECT", "app.orders"), ("SELECT", "crm.customers")}
    assert {o.database for o in a.objects} == {"app", "crm"}


def test_mysql_no_database_selected() -> None:
    a = analyze("SELECT * FROM t", "mysql", database=None)
    (obj,) = a.objects
    assert obj.database is None and obj.name == "t"


def test_postgres_objects_use_the_search_path() -> None:
    assert acc(pg("SELECT * FROM t")) == {("SELECT", "public.t")}
    assert acc(pg("SELECT * FROM t", search_path=("sales", "public"))) == {("SELECT", "sales.t")}
    a = pg('SELECT * FROM "Sales"."Orders" JOIN Crm.Customers USING (id)')
    assert acc(a) == {("SELECT", "Sales.Orders"), ("SELECT", "crm.customers")}
    assert all(o.database == "appdb" for o in a.objects)


def test_postgres_casts_and_parameters() -> None:
    a = pg("SELECT x::int, '2024-01-01'::date FROM s.t WHERE y = $1")
    assert a.kind is K.SELECT and acc(a) == {("SELECT", "s.t")}
    assert a.fingerprint == "SELECT x::INT, ?::DATE FROM s.t WHERE y = ?"


def test_insert_select_reads_and_writes() -> None:
    a = my("INSERT INTO archive SELECT * FROM orders WHERE created < '2020-01-01'")
    assert acc(a) == {("INSERT", "app.archive"), ("SELECT", "app.orders")}
    assert [o.qualified for o in a.writes] == ["app.archive"]
    assert [o.qualified for o in a.reads] == ["app.orders"]


def test_create_table_as_select() -> None:
    a = pg("CREATE TABLE x AS SELECT * FROM y")
    assert a.kind is K.CREATE and acc(a) == {("CREATE", "public.x"), ("SELECT", "public.y")}
    a = pg("SELECT * INTO newt FROM t")
    assert K.CREATE in a.kinds and ("CREATE", "public.newt") in acc(a)


def test_on_duplicate_key_and_on_conflict_returning() -> None:
    assert acc(my("INSERT INTO t (a) VALUES (1) ON DUPLICATE KEY UPDATE a = a + 1")) == {("UPSERT", "app.t")}
    a = pg("INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET x = excluded.x RETURNING *")
    assert a.kind is K.UPSERT and acc(a) == {("UPSERT", "public.t")}


def test_update_delete_with_joins() -> None:
    a = pg("UPDATE t SET a = 1 FROM u WHERE t.id = u.id")
    assert acc(a) == {("UPDATE", "public.t"), ("SELECT", "public.u")}
    a = pg("DELETE FROM t USING u WHERE t.id = u.id")
    assert acc(a) == {("DELETE", "public.t"), ("SELECT", "public.u")}
    a = my("DELETE a FROM t1 a JOIN t2 b ON a.id = b.id WHERE b.x = 1")
    assert acc(a) == {("DELETE", "app.t1"), ("SELECT", "app.t2")}
    a = my("UPDATE t1 a JOIN t2 b ON a.id = b.id SET a.x = 1 WHERE b.y = 2")
    assert acc(a) == {("UPDATE", "app.t1"), ("SELECT", "app.t2")}
    # an unqualified SET column could be in either table: both count as written
    a = my("UPDATE t1 JOIN t2 ON t1.id = t2.id SET x = 1 WHERE t2.y = 2")
    assert acc(a) == {("UPDATE", "app.t1"), ("UPDATE", "app.t2")}


def test_merge_objects() -> None:
    a = pg("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE")
    assert acc(a) == {("MERGE", "public.t"), ("SELECT", "public.s")}


def test_ddl_objects() -> None:
    assert acc(pg("DROP TABLE a, b.c")) == {("DROP", "public.a"), ("DROP", "b.c")}
    assert acc(pg("ALTER TABLE a RENAME TO b")) == {("ALTER", "public.a"), ("ALTER", "public.b")}
    assert acc(pg("CREATE INDEX i ON t (a)")) == {("CREATE", "public.t")}
    assert acc(pg("TRUNCATE a, s.b")) == {("TRUNCATE", "public.a"), ("TRUNCATE", "s.b")}
    assert acc(my("RENAME TABLE a TO b, c.d TO c.e")) == {
        ("RENAME", "app.a"),
        ("RENAME", "app.b"),
        ("RENAME", "c.d"),
        ("RENAME", "c.e"),
    }
    a = my("CREATE DATABASE shop")
    assert a.kind is K.CREATE and a.objects[0].type is ObjectType.DATABASE and a.objects[0].database == "shop"
    a = pg("DROP SCHEMA old CASCADE")
    assert a.kind is K.DROP and a.objects[0].type is ObjectType.DATABASE and a.objects[0].schema == "old"
    # code defined now and run later: its objects are not read, the kind needs the whole connection
    a = pg("CREATE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql")
    assert K.CREATE in a.opaque_kinds


def test_ctes_are_not_tables_but_shadowing_is_handled() -> None:
    assert acc(pg("WITH a AS (SELECT * FROM t) SELECT * FROM a")) == {("SELECT", "public.t")}
    # inside a non-recursive CTE, its own name is the real table
    assert acc(pg("WITH t AS (SELECT * FROM t) SELECT * FROM t")) == {("SELECT", "public.t")}
    # a CTE of the same name in another branch does not hide the real table
    a = pg("SELECT * FROM secret UNION (WITH secret AS (SELECT 1) SELECT * FROM secret)")
    assert acc(a) == {("SELECT", "public.secret")}
    a = pg("WITH RECURSIVE r AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT * FROM r")
    assert acc(a) == set()


def test_data_modifying_cte_is_found() -> None:
    a = pg("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d")
    assert a.kind is K.SELECT and K.DELETE in a.kinds
    assert acc(a) == {("DELETE", "public.t")}
    assert a.unfiltered_write
    a = pg("WITH x AS (SELECT id FROM s) UPDATE t SET a = 1 WHERE id IN (SELECT id FROM x)")
    assert a.kind is K.UPDATE and acc(a) == {("UPDATE", "public.t"), ("SELECT", "public.s")}
    a = pg("WITH i AS (INSERT INTO log VALUES (1) RETURNING id) SELECT * FROM i")
    assert ("INSERT", "public.log") in acc(a)


def test_writes_in_subqueries_and_functions() -> None:
    a = pg("SELECT * FROM t WHERE id IN (SELECT id FROM u WHERE x = 1)")
    assert acc(a) == {("SELECT", "public.t"), ("SELECT", "public.u")}


def test_explain_analyze_is_the_statement_it_runs() -> None:
    a = pg("EXPLAIN ANALYZE DELETE FROM t WHERE id = 1")
    assert a.kind is K.DELETE and {K.DELETE, K.EXPLAIN} <= a.kinds and acc(a) == {("DELETE", "public.t")}
    a = pg("EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1")
    assert a.kind is K.UPDATE and a.unfiltered_write
    a = pg("EXPLAIN (ANALYSE false) DELETE FROM t")  # fails closed: treated as running
    assert a.kind is K.DELETE
    a = pg("EXPLAIN VERBOSE DELETE FROM t")
    assert a.kind is K.EXPLAIN and acc(a) == {("EXPLAIN", "public.t")}
    a = my("EXPLAIN ANALYZE DELETE FROM t")
    assert a.kind is K.DELETE
    a = my("ANALYZE FORMAT=JSON UPDATE t SET a = 1")  # MariaDB ANALYZE statement runs it
    assert a.kind is K.UPDATE
    a = my("EXPLAIN DELETE FROM t")
    assert a.kind is K.EXPLAIN and K.DELETE not in a.kinds


def test_unfiltered_writes() -> None:
    assert my("DELETE FROM t").unfiltered_write
    assert my("UPDATE t SET a = 1").unfiltered_write
    assert my("UPDATE t SET a = 1 LIMIT 5").unfiltered_write
    assert not my("DELETE FROM t WHERE id = 1").unfiltered_write
    assert not my("INSERT INTO t VALUES (1)").unfiltered_write
    assert pg("TRUNCATE t").unfiltered_write


def test_select_for_update_locks() -> None:
    a = my("SELECT * FROM t WHERE id = 1 FOR UPDATE")
    assert a.kind is K.SELECT and K.LOCK in a.kinds and a.locking
    assert ("LOCK", "app.t") in acc(a) and ("SELECT", "app.t") in acc(a)
    assert K.LOCK in pg("SELECT * FROM t FOR SHARE").kinds
    assert K.LOCK in my("SELECT * FROM t LOCK IN SHARE MODE").kinds
    assert acc(pg("LOCK TABLE a, s.b IN SHARE MODE")) == {("LOCK", "public.a"), ("LOCK", "s.b")}


# ---------------------------------------------------------------------------- routines


def test_routine_calls() -> None:
    a = my("CALL app2.p(1, (SELECT max(id) FROM s))")
    assert a.kind is K.CALL and a.calls_routines
    assert acc(a) == {("CALL", "app2.p"), ("SELECT", "app.s")}
    assert [r.qualified for r in a.routines] == ["app2.p"]
    a = pg("CALL p()")
    assert acc(a) == {("CALL", "public.p")}


def test_function_calls_in_select() -> None:
    a = my("SELECT my_func(id), NOW(), COUNT(*), DATABASE(), VERSION() FROM t")
    assert a.calls_routines and acc(a) == {("CALL", "app.my_func"), ("SELECT", "app.t")}
    a = pg("SELECT public.f(1), pg_catalog.now(), current_setting('x'), lower('A')")
    assert acc(a) == {("CALL", "public.f")}
    a = pg("SELECT * FROM my_srf(1)")
    assert acc(a) == {("CALL", "public.my_srf")}
    # state-changing built-ins are routine calls too
    assert ("CALL", "public.nextval") in acc(pg("SELECT nextval('s')"))
    assert ("CALL", "public.set_config") in acc(pg("SELECT set_config('role', 'admin', false)"))
    assert not my("SELECT 1 + 1, CONCAT('a', 'b'), COALESCE(NULL, 1)").calls_routines


def test_file_access() -> None:
    a = my("SELECT * FROM t INTO OUTFILE '/tmp/x'")
    assert a.writes_files and K.FILE in a.kinds and acc(a) == {("SELECT", "app.t")}
    a = my("SELECT a INTO OUTFILE '/tmp/x' FIELDS TERMINATED BY ',' FROM t WHERE id = 1")
    assert a.writes_files and acc(a) == {("SELECT", "app.t")}
    a = my("SELECT * FROM t INTO DUMPFILE '/tmp/x'")
    assert a.writes_files
    a = my("LOAD DATA INFILE '/etc/passwd' INTO TABLE db2.t")
    assert a.reads_files and K.FILE in a.kinds and acc(a) == {("LOAD DATA", "db2.t")}
    a = my("LOAD DATA LOCAL INFILE 'x.csv' INTO TABLE t FIELDS TERMINATED BY ','")
    assert a.kind is K.LOAD_DATA and K.FILE not in a.kinds and acc(a) == {("LOAD DATA", "app.t")}
    a = my("SELECT LOAD_FILE('/etc/passwd')")
    assert a.reads_files and K.FILE in a.kinds
    a = pg("COPY t TO '/tmp/x'")
    assert a.kind is K.COPY_TO and a.writes_files and K.FILE in a.kinds
    a = pg("COPY t FROM PROGRAM 'curl http://x'")
    assert a.kind is K.COPY_FROM and a.reads_files
    a = pg("SELECT pg_read_file('/etc/passwd')")
    assert a.reads_files


def test_copy() -> None:
    a = pg("COPY t (a, b) FROM STDIN WITH (FORMAT csv)")
    assert a.kind is K.COPY_FROM and acc(a) == {("COPY FROM", "public.t")} and not a.reads_files
    a = pg("COPY (SELECT * FROM secret) TO STDOUT")
    assert a.kind is K.COPY_TO and acc(a) == {("SELECT", "public.secret")}
    a = pg("COPY s.t TO STDOUT")
    assert a.kind is K.COPY_TO and acc(a) == {("SELECT", "s.t")}


# ---------------------------------------------------------------------------- opaque forms


def test_replace_is_an_upsert_write() -> None:
    a = my("REPLACE INTO t (a) SELECT a FROM u")
    assert a.kind is K.UPSERT and acc(a) == {("UPSERT", "app.t"), ("SELECT", "app.u")}
    assert a.fingerprint == "REPLACE INTO t(a) SELECT a FROM u"


def test_do_block_is_procedural() -> None:
    a = pg("DO $$ BEGIN DELETE FROM t; END $$")
    assert a.kind is K.PROCEDURAL and a.procedural and K.PROCEDURAL in a.opaque_kinds


def test_set_role_and_search_path() -> None:
    assert pg("SET ROLE admin").kind is K.SET_ROLE
    a = pg("SET search_path TO sales, public")
    assert a.new_search_path == ("sales", "public")
    a = pg("SET search_path = '$user', app")
    assert a.new_search_path == ("app",)
    # a later statement in the same message uses the new path
    a = pg("SET search_path TO sales; SELECT * FROM orders")
    assert ("SELECT", "sales.orders") in acc(a)


def test_use_changes_the_database_for_later_statements() -> None:
    a = my("USE db2; DELETE FROM t WHERE id = 1")
    assert ("DELETE", "db2.t") in acc(a) and ("USE", "db2") in acc(a)
    assert a.new_database == "db2"
    assert my("USE `weird db`").new_database == "weird db"


def test_set_user_variable_with_subquery_is_read() -> None:
    a = my("SET @x = (SELECT secret FROM vault)")
    assert a.kind is K.SET and acc(a) == {("SELECT", "app.vault")}


def test_prepare_is_checked_as_its_statement() -> None:
    a = my("PREPARE s FROM 'DELETE FROM t WHERE id = ?'")
    assert a.kind is K.EXECUTE and K.DELETE in a.kinds and acc(a) == {("DELETE", "app.t")}
    a = pg("PREPARE p (int) AS UPDATE t SET a = $1")
    assert K.UPDATE in a.kinds and acc(a) == {("UPDATE", "public.t")}
    assert my("PREPARE s FROM @sql").kind is K.UNKNOWN


def test_declare_cursor_reads_its_query() -> None:
    a = pg("DECLARE c CURSOR WITH HOLD FOR SELECT * FROM t")
    assert acc(a) == {("SELECT", "public.t")}


# ---------------------------------------------------------------------------- hiding places


def test_executable_comment_cannot_hide_a_write() -> None:
    a = my("SELECT 1 /*!50000 ; DELETE FROM t */")
    assert K.DELETE in a.kinds and ("DELETE", "app.t") in acc(a)
    a = my("SELECT 1 /*M!100100 ; DROP TABLE t */")
    assert K.DROP in a.kinds
    a = my("SELECT * FROM t /*! UNION SELECT * FROM secret */")
    assert ("SELECT", "app.secret") in acc(a)


def test_executable_comment_reading_with_server_version() -> None:
    a = my("SELECT 1 /*!90000 ; DELETE FROM t */", server_version="8.0.36")
    assert K.DELETE not in a.kinds
    a = my("SELECT 1 /*!80000 ; DELETE FROM t */", server_version="8.0.36")
    assert K.DELETE in a.kinds


def test_versioned_comment_cannot_fake_a_where_clause() -> None:
    # a server older than 9.99.99 runs DELETE FROM t without the WHERE
    assert my("DELETE FROM t /*!99999 WHERE id = 1 */").unfiltered_write


def test_hint_comments_are_harmless() -> None:
    a = my("SELECT /*+ MAX_EXECUTION_TIME(1000) */ * FROM t WHERE id = 1")
    assert a.kind is K.SELECT and acc(a) == {("SELECT", "app.t")}
    a = pg("/* app=web */ SELECT * FROM t -- trailing\n")
    assert a.kind is K.SELECT and acc(a) == {("SELECT", "public.t")}


def test_semicolons_in_strings_are_not_statements() -> None:
    a = my("SELECT 'a; DELETE FROM t' AS x")
    assert a.kinds == {K.SELECT} and a.statement_count == 1
    a = pg("SELECT $body$ ; DROP TABLE t; $body$")
    assert a.kinds == {K.SELECT}
    a = pg("SELECT E'\\'; DROP TABLE t; --'")
    assert a.kinds == {K.SELECT}


def test_backslash_quote_ambiguity_is_analysed_both_ways() -> None:
    # with NO_BACKSLASH_ESCAPES the server sees a DELETE here
    a = my("SELECT 'a\\'; DELETE FROM t; -- '")
    assert K.DELETE in a.kinds
    # ordinary escaped quotes stay a single harmless statement
    a = my("INSERT INTO t VALUES ('O\\'Brien')")
    assert a.kinds == {K.INSERT}


def test_multi_statements() -> None:
    a = my("SELECT 1; DROP TABLE x; UPDATE t SET a = 1 WHERE id = 2")
    assert a.statement_count == 3 and {K.SELECT, K.DROP, K.UPDATE} <= a.kinds
    assert [s.kind for s in a.statements] == [K.SELECT, K.DROP, K.UPDATE]
    assert a.kind is K.SELECT
    assert a.fingerprint == "SELECT ?; DROP TABLE x; UPDATE t SET a = ? WHERE id = ?"
    # one unknown piece makes the whole message unknown
    a = pg("SELECT 1; FROBNICATE")
    assert a.kind is K.UNKNOWN and a.unknown
    assert split_statements("SELECT 1; DROP TABLE x", "mysql") == ["SELECT 1", "DROP TABLE x"]


# ---------------------------------------------------------------------------- fingerprints


def test_fingerprint_normalises_literals_case_and_space() -> None:
    a = my("select  *\n from T where a in (1, 2, 3) and b = 'x' limit 10")
    b = my('SELECT * FROM t WHERE a IN (5,6) AND b = "y" LIMIT 99')
    assert a.fingerprint == b.fingerprint == "SELECT * FROM t WHERE a IN (?+) AND b = ? LIMIT ?"
    assert a.fingerprint_hash == b.fingerprint_hash and len(a.fingerprint_hash) == 16
    assert (
        my("SELECT * FROM t WHERE a = 1").fingerprint_hash
        != my("SELECT * FROM u WHERE a = 1").fingerprint_hash
    )


def test_fingerprint_collapses_values_lists_and_parameters() -> None:
    a = pg("INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'), (3, 'z')")
    b = pg("INSERT INTO t (a, b) VALUES (4, 'w')")
    assert a.fingerprint == b.fingerprint == "INSERT INTO t(a, b) VALUES (?+)"
    assert pg("SELECT * FROM t WHERE id = $1").fingerprint == pg("SELECT * FROM t WHERE id = 7").fingerprint
    assert my("SELECT * FROM t WHERE id = ?").fingerprint == my("SELECT * FROM t WHERE id = 7").fingerprint
    assert pg("SELECT -1").fingerprint == "SELECT ?"
    assert my("CALL p(1, 'a')").fingerprint == my("CALL p(2, 'b')").fingerprint == "CALL p(?+)"
    assert my("SELECT /* x */ 1").fingerprint == my("SELECT 2 -- y").fingerprint


def test_analysis_cache_returns_the_same_value() -> None:
    a = my("SELECT * FROM cache_probe WHERE id = 1")
    assert my("SELECT * FROM cache_probe WHERE id = 1") is a
    # the database in effect is part of the key
    assert analyze("SELECT * FROM cache_probe WHERE id = 1", "mysql", database="other") is not a


def test_deep_nesting_fails_closed() -> None:
    sql = "SELECT " + "(" * 3000 + "1" + ")" * 3000
    a = pg(sql)
    assert a.kind in (K.SELECT, K.UNKNOWN)


def test_unsupported_dialect() -> None:
    with pytest.raises(ValueError):
        analyze("SELECT 1", "oracle")  # type: ignore[arg-type]


def test_code_the_tokenizer_skipped_makes_the_statement_unknown() -> None:
    from sqlglot.dialects.dialect import Dialect

    from dbward.sql.analysis import _tokens_cover_code

    short = list(Dialect.get_or_raise("mysql").tokenize("SELECT 1"))
    assert _tokens_cover_code("SELECT 1", short, "mysql")
    assert _tokens_cover_code("SELECT 1 /* note */ -- x", short, "mysql")
    assert not _tokens_cover_code("SELECT 1 UNION SELECT secret FROM s", short, "mysql")


_WORDS = st.sampled_from(
    [
        "SELECT",
        "DELETE",
        "FROM",
        "t",
        "WHERE",
        "1",
        "'x'",
        '"y"',
        "`z`",
        ";",
        "(",
        ")",
        ",",
        "/*!",
        "*/",
        "/*",
        "--",
        "#",
        "\n",
        "$$",
        "E'",
        "\\",
        "WITH",
        "AS",
        "INSERT",
        "INTO",
        "VALUES",
        "EXPLAIN",
        "ANALYZE",
        "CALL",
        "SET",
        "@x",
        "=",
        "::",
        "$1",
        "?",
        "UNION",
        "*",
        "REPLACE",
        "DO",
        "USE",
        " ",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_WORDS, max_size=25), st.sampled_from(["mysql", "postgres"]))
def test_analyze_never_raises_and_always_says_why_when_unknown(words: list[str], dialect: str) -> None:
    sql = " ".join(words)
    a = analyze(sql, dialect, database="app")  # type: ignore[arg-type]
    assert a.kind in a.kinds
    if a.unknown:
        assert a.reasons
    assert a.fingerprint_hash


def test_object_identifier_array_casts_parse() -> None:
    """asyncpg's type introspection casts parameters to oid[]; sqlglot alone cannot read it."""
    a = analyze("SELECT t.oid FROM pg_catalog.pg_type t WHERE t.oid = any($1::oid[])", "postgres")
    assert a.kind is StatementKind.SELECT, a.reasons
    assert not a.unknown
    b = analyze("SELECT '{1,2}'::regclass[]", "postgres")
    assert not b.unknown


def test_queries_differing_only_in_numbers_share_one_parse() -> None:
    from dbward.sql import analysis as analysis_mod

    analysis_mod.cache_clear()
    a = analyze("SELECT abalance FROM pgbench_accounts WHERE aid = 17", "postgres")
    parses = len(analysis_mod._SHAPES)
    b = analyze("select abalance from pgbench_accounts where aid = 18", "postgres")
    assert len(analysis_mod._SHAPES) == parses  # the second text reused the first parse
    assert a.accesses == b.accesses and a.kind is b.kind is StatementKind.SELECT
    assert b.sql.endswith("18") and a.fingerprint == b.fingerprint
    # a string literal can name an object (nextval('s')): strings are part of the key
    analyze("SELECT nextval('seq_a')", "postgres")
    analyze("SELECT nextval('seq_b')", "postgres")
    assert len(analysis_mod._SHAPES) == parses + 2


def test_cached_shape_is_not_shared_across_databases() -> None:
    a = analyze("UPDATE t SET x = 1 WHERE id = 2", "mysql", database="db1")
    b = analyze("UPDATE t SET x = 1 WHERE id = 3", "mysql", database="db2")
    assert {x.obj.qualified for x in a.accesses} != {x.obj.qualified for x in b.accesses}


def test_garbage_that_makes_sqlglot_raise_type_error_is_unknown() -> None:
    a = analyze("DELETE INSERT ( 1 ? UNION $1 EXPLAIN DO ANALYZE", "postgres")
    assert a.unknown and a.reasons


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            "SELECT abalance FROM pgbench_accounts WHERE aid = 17;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 9;",
        ),
        (
            "UPDATE t SET x = 1.5 WHERE id IN (1, 2) LIMIT 10",
            "UPDATE t SET x = 2e3 WHERE id IN (7, 8) LIMIT 1",
        ),
    ],
)
def test_plain_statements_differing_in_numbers_share_a_shape(a: str, b: str) -> None:
    from dbward.sql.analysis import plain_shape

    assert plain_shape(a) is not None and plain_shape(a) == plain_shape(b)
    x, y = analyze(a, "mysql", database="app"), analyze(b, "mysql", database="app")
    assert y.sql == b and x.signature == y.signature and x.accesses == y.accesses


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("SELECT * FROM t1", "SELECT * FROM t2"),  # digits in names are names
        ("SELECT * FROM é1", "SELECT * FROM é2"),
        ("SELECT * FROM 1abc", "SELECT * FROM 2abc"),  # MySQL names may start with digits
        ("SELECT * FROM s.t WHERE a = @1", "SELECT * FROM s.t WHERE a = @2"),
        ("SELECT * FROM app_1.t", "SELECT * FROM app_2.t"),
    ],
)
def test_digits_in_names_are_never_taken_for_literals(a: str, b: str) -> None:
    from dbward.sql.analysis import plain_shape

    assert plain_shape(a) != plain_shape(b)


@pytest.mark.parametrize(
    "text",
    [
        'SELECT "c1" FROM t',
        "SELECT `c1` FROM t",
        "SELECT 1 -- 2",
        "SELECT 1 /*!50000 , 2 */",
        "SELECT 1 # 2",
        "SELECT $1",
        "SELECT a ? b FROM t",
        "SELECT E'\\\\1'",
    ],
)
def test_texts_with_quotes_comments_or_parameters_are_not_plain(text: str) -> None:
    from dbward.sql.analysis import plain_shape

    assert plain_shape(text) is None


def test_a_shape_hit_keeps_database_and_dialect_apart() -> None:
    a = analyze("DELETE FROM t WHERE id = 1", "mysql", database="db1")
    b = analyze("DELETE FROM t WHERE id = 2", "mysql", database="db2")
    c = analyze("DELETE FROM t WHERE id = 3", "postgres", database="db1")
    assert {x.obj.qualified for x in a.accesses} == {"db1.t"}
    assert {x.obj.qualified for x in b.accesses} == {"db2.t"}
    assert {x.obj.qualified for x in c.accesses} == {"public.t"}


def test_a_text_sharing_a_shape_gets_the_analysis_with_its_own_text() -> None:
    from dataclasses import replace

    from dbward.sql import analysis as analysis_mod

    analysis_mod.cache_clear()
    a = analyze("SELECT abalance FROM pgbench_accounts WHERE aid = 17", "postgres", database="bench")
    b = analyze("SELECT abalance FROM pgbench_accounts WHERE aid = 18", "postgres", database="bench")
    assert b == replace(a, sql="SELECT abalance FROM pgbench_accounts WHERE aid = 18")
    assert b.signature == a.signature and b.signature != 0
    # a repeated text is served by its exact arguments, and only by them
    assert analyze("SELECT abalance FROM pgbench_accounts WHERE aid = 18", "postgres", database="bench") is b
    other = analyze("SELECT abalance FROM pgbench_accounts WHERE aid = 18", "postgres", database="other")
    assert other is not b and other.sql == b.sql
