"""Column lineage (:mod:`dbward.sql.lineage`): sources of result columns, inference channels,
writes, unresolved statements, readings of executable comments, and the cache."""

from __future__ import annotations

from dbward.sql import lineage as lineage_mod
from dbward.sql.lineage import Catalog, Lineage, SourceColumn, lineage_key, output_lineage

MY = Catalog(
    {
        ("app", "users"): ("id", "name", "phone", "email"),
        ("app", "orders"): ("id", "user_id", "note"),
        ("app", "t2"): ("a", "b"),
        ("hr", "users"): ("id", "salary"),
        ("app", "v1"): ("id", "np"),
    },
    {
        ("app", "v1"): "SELECT id, concat(name, phone) AS np FROM users",
        ("app", "loop_a"): "SELECT * FROM loop_b",
        ("app", "loop_b"): "SELECT * FROM loop_a",
    },
    version=7,
)
PG = Catalog(
    {
        ("public", "users"): ("id", "name", "phone", "Email"),
        ("public", "orders"): ("id", "user_id", "note"),
        ("hr", "users"): ("id", "salary"),
        ("public", "v"): ("id", "p"),
    },
    {("public", "v"): "SELECT id, phone AS p FROM public.users"},
    version=7,
    database="db",
)


def my(sql: str, **kw: object) -> Lineage:
    return output_lineage(sql, "mysql", catalog=MY, database="app", **kw)  # type: ignore[arg-type]


def pg(sql: str, search_path: tuple[str, ...] = (), **kw: object) -> Lineage:
    return output_lineage(sql, "postgres", catalog=PG, database="db", search_path=search_path, **kw)  # type: ignore[arg-type]


def cols(lin: Lineage) -> list[tuple[set[str], set[str]]]:
    assert lin.unresolved is None, lin.unresolved
    return [({str(s) for s in o.direct}, {str(s) for s in o.derived}) for o in lin.outputs]


def names(srcs: frozenset[SourceColumn]) -> set[str]:
    return {str(s) for s in srcs}


def test_plain_select_star_and_aliases() -> None:
    lin = my("SELECT u.*, o.note AS n FROM users u JOIN orders o ON o.user_id = u.id")
    assert [o.name for o in lin.outputs] == ["id", "name", "phone", "email", "n"]
    assert cols(lin)[2] == ({"app.users.phone"}, set())
    assert names(lin.inference) == {"app.orders.user_id", "app.users.id"}
    assert lin.tables == {("app", "users"), ("app", "orders")}
    src = next(iter(lin.outputs[2].direct))
    assert src == SourceColumn("app", "app", "users", "phone")


def test_functions_make_values_derived() -> None:
    c = cols(
        my("SELECT concat(phone, ''), lower(email), substr(phone, 1, 3), CAST(phone AS CHAR) FROM users")
    )
    assert c[0] == (set(), {"app.users.phone"})
    assert c[1] == (set(), {"app.users.email"})
    assert c[2] == (set(), {"app.users.phone"})
    assert c[3] == ({"app.users.phone"}, set())  # a cast keeps the value


def test_case_condition_is_derived_branches_direct() -> None:
    lin = my("SELECT CASE WHEN email LIKE 'a%' THEN phone ELSE name END FROM users")
    assert cols(lin)[0] == ({"app.users.phone", "app.users.name"}, {"app.users.email"})
    assert names(lin.inference) == {"app.users.email"}  # a condition is a predicate on the value


def test_aggregates_and_count() -> None:
    lin = my("SELECT group_concat(phone), max(email), count(name), count(*) FROM users")
    c = cols(lin)
    assert c[0] == (set(), {"app.users.phone"})
    assert c[1] == ({"app.users.email"}, set())
    assert c[2] == (set(), set()) and c[3] == (set(), set())
    assert names(lin.inference) == {"app.users.name"}  # which rows count


def test_window_functions() -> None:
    lin = my("SELECT lag(phone) OVER (PARTITION BY name ORDER BY email), row_number() OVER () FROM users")
    assert cols(lin)[0] == ({"app.users.phone"}, set())
    assert names(lin.inference) == {"app.users.name", "app.users.email"}


def test_derived_tables_ctes_and_set_operations() -> None:
    assert cols(my("SELECT x FROM (SELECT phone AS x FROM users) t"))[0] == ({"app.users.phone"}, set())
    assert cols(my("SELECT a FROM (SELECT phone, name FROM users) AS t(a, b)"))[0] == (
        {"app.users.phone"},
        set(),
    )
    assert cols(my("WITH c AS (SELECT email FROM users) SELECT * FROM c"))[0] == ({"app.users.email"}, set())
    u = cols(my("SELECT name FROM users UNION SELECT note FROM orders"))
    assert u[0] == ({"app.users.name", "app.orders.note"}, set())


def test_recursive_cte_reaches_a_fixed_point() -> None:
    lin = my(
        "WITH RECURSIVE c(x, y) AS (SELECT id, name FROM users UNION ALL "
        "SELECT x + 1, concat(y, phone) FROM c JOIN users ON users.id = c.x WHERE x < 3) SELECT y, x FROM c"
    )
    c = cols(lin)
    assert c[0] == (set(), {"app.users.name", "app.users.phone"})
    assert c[1] == (set(), {"app.users.id"})


def test_scalar_subquery_and_correlation() -> None:
    lin = my("SELECT (SELECT max(x.phone) FROM users x WHERE x.id = u.id) FROM users u")
    assert cols(lin)[0] == ({"app.users.phone"}, set())
    assert names(lin.inference) == {"app.users.id"}


def test_views_resolve_through_definitions() -> None:
    assert cols(my("SELECT np FROM v1"))[0] == (set(), {"app.users.name", "app.users.phone"})
    assert cols(pg("SELECT * FROM v"))[1] == ({"public.users.phone"}, set())
    lin = my("SELECT * FROM loop_a")
    assert lin.unresolved is not None and "nested too deeply" in lin.unresolved


def test_case_insensitive_mysql_and_exact_postgres() -> None:
    assert cols(my("SELECT PHONE FROM `APP`.`Users`"))[0] == ({"app.users.phone"}, set())
    assert cols(pg('SELECT "Email" FROM users'))[0] == ({"public.users.Email"}, set())
    lin = pg("SELECT email FROM users")  # unquoted folds to lower case: no such column
    assert lin.unresolved is not None and lin.tables_known


def test_search_path_changes_in_a_batch_and_shadowing() -> None:
    lin = pg("SET search_path = public; SELECT phone FROM users", search_path=("hr",))
    assert names(lin.statements[1].outputs[0].direct) == {"public.users.phone"}
    # unqualified: a same-named column of a same-named table elsewhere counts as a source
    assert names(pg("SELECT id FROM users").outputs[0].direct) == {"public.users.id", "hr.users.id"}
    assert names(pg("SELECT id FROM public.users").outputs[0].direct) == {"public.users.id"}


def test_search_path() -> None:
    assert cols(pg("SELECT * FROM users", search_path=("hr", "public")))[1] == ({"hr.users.salary"}, set())
    assert cols(pg("SELECT phone FROM users", search_path=("nothing", "public")))[0] == (
        {"public.users.phone"},
        set(),
    )
    lin = pg("SELECT * FROM other_db.public.users")
    assert lin.unresolved is not None and "another database" in lin.unresolved


def test_whole_row_references() -> None:
    for sql in (
        "SELECT row_to_json(u) FROM users u",
        "SELECT u FROM users u",
        "SELECT to_json(u.*) FROM users u",
    ):
        _d, der = cols(pg(sql))[0]
        # hr.users.id: an unqualified name may resolve to another schema's table of that name
        assert der == {
            "public.users.id",
            "public.users.name",
            "public.users.phone",
            "public.users.Email",
            "hr.users.id",
        }, sql


def test_lateral_and_table_functions() -> None:
    assert cols(pg("SELECT l.pp FROM users u, LATERAL (SELECT u.phone AS pp) l"))[0] == (
        {"public.users.phone"},
        set(),
    )
    assert cols(pg("SELECT g.x FROM users, json_to_record(users.name) AS g(x text)"))[0] == (
        set(),
        {"public.users.name"},
    )
    lin = pg("SELECT * FROM my_function()")
    assert lin.unresolved is not None and not lin.tables_known


def test_writes() -> None:
    lin = my("INSERT INTO t2 SELECT phone, name FROM users")
    assert [(w.target, names(w.sources), str(w.target_column)) for w in lin.writes] == [
        ("table t2", {"app.users.phone"}, "app.t2.a"),
        ("table t2", {"app.users.name"}, "app.t2.b"),
    ]
    assert names(my("CREATE TABLE t3 AS SELECT email FROM users").writes[0].sources) == {"app.users.email"}
    assert "session variable" in my("SELECT phone INTO @x FROM users").writes[0].target
    assert "session variable" in my("SELECT @x := phone FROM users").writes[0].target
    assert "session variable" in my("SET @y = (SELECT phone FROM users LIMIT 1)").writes[0].target
    assert "file" in my("SELECT phone FROM users INTO OUTFILE '/tmp/x'").writes[0].target
    w = my("UPDATE users SET name = phone WHERE id = 1").writes[0]
    assert str(w.target_column) == "app.users.name" and names(w.sources) == {"app.users.phone"}
    assert "table" in pg("SELECT name INTO t9 FROM users").writes[0].target
    assert "file" in pg("COPY users TO '/tmp/x'").writes[0].target


def test_returning_and_copy() -> None:
    assert cols(pg("DELETE FROM users WHERE id = 1 RETURNING phone"))[0] == ({"public.users.phone"}, set())
    assert [o.name for o in pg("COPY users TO STDOUT").outputs] == ["id", "name", "phone", "Email"]
    assert cols(pg("COPY (SELECT note FROM orders) TO STDOUT"))[0] == ({"public.orders.note"}, set())
    lin = pg("UPDATE users SET name = 'x' WHERE phone = '1' RETURNING id")
    assert names(lin.inference) == {"public.users.phone"}


def test_unresolved_says_why() -> None:
    cases = {
        "SELECT myfunc(id) FROM users": "not built in",
        "CALL p()": "stored procedure",
        "SELECT * FROM nope": "not in dbward's catalog",
        "MERGE INTO t2 USING users ON t2.a = users.name WHEN MATCHED THEN UPDATE SET b = users.phone": "MERGE",
        "SELECT FROM WHERE": "parsed",
    }
    for sql, why in cases.items():
        lin = my(sql)
        assert lin.unresolved is not None and why in lin.unresolved, (sql, lin.unresolved)
    assert not my("CALL p()").tables_known
    assert my("SELECT missing FROM orders").tables == {("app", "orders")}


def test_statements_without_data() -> None:
    for sql in (
        "BEGIN",
        "SHOW TABLES",
        "SET NAMES utf8mb4",
        "USE app",
        "DROP TABLE t2",
        "EXPLAIN SELECT * FROM users",
    ):
        lin = my(sql)
        assert lin.resolved and not lin.outputs and not lin.writes, sql


def test_deferred_results() -> None:
    assert pg("DECLARE c CURSOR FOR SELECT phone FROM users").deferred is not None
    assert my("PREPARE s FROM 'SELECT phone FROM users'").deferred is not None
    lin = my("PREPARE s FROM @q")
    assert lin.unresolved is not None and not lin.tables_known


def test_executable_comments_are_read_both_ways() -> None:
    lin = my("SELECT id /*!50000 , phone */ FROM users")
    assert len(lin.outputs) == 2 and names(lin.outputs[1].direct) == {"app.users.phone"}
    one = my("SELECT id /*!50000 , phone */ FROM users", server_version="4.0.0")
    assert len(one.outputs) == 1


def test_batches_give_one_lineage_per_statement() -> None:
    lin = my("SELECT id FROM orders; SELECT phone FROM users")
    assert len(lin.statements) == 2
    assert names(lin.statements[1].outputs[0].direct) == {"app.users.phone"}


def test_lineage_key_keeps_what_lineage_depends_on() -> None:
    assert lineage_key("SELECT a FROM t WHERE x = 1", "mysql") == lineage_key(
        "select a from t where x = 2", "mysql"
    )
    assert lineage_key("SELECT a, b FROM t ORDER BY 1", "mysql") != lineage_key(
        "SELECT a, b FROM t ORDER BY 2", "mysql"
    )
    assert lineage_key("SELECT a FROM t GROUP BY 1, 2", "mysql") != lineage_key(
        "SELECT a FROM t GROUP BY 1, 3", "mysql"
    )
    assert lineage_key("SELECT id FROM t", "mysql") != lineage_key("SELECT id /*!, phone */ FROM t", "mysql")
    assert lineage_key("PREPARE s FROM 'SELECT 1'", "mysql") != lineage_key("PREPARE s FROM @q", "mysql")
    # what follows a command word (EXPLAIN, CALL) is not one opaque literal
    assert lineage_key("EXPLAIN ANALYZE SELECT a FROM t", "postgres") != lineage_key(
        "EXPLAIN ANALYZE SELECT b FROM t", "postgres"
    )
    assert lineage_key("CALL a()", "mysql") != lineage_key("CALL b()", "mysql")


def test_explain_analyze_runs_the_statement() -> None:
    lin = pg("EXPLAIN (ANALYZE, FORMAT JSON) SELECT name FROM users WHERE phone LIKE '9%'")
    assert lin.outputs == () and names(lin.inference) == {"public.users.phone"}
    lin = my("EXPLAIN ANALYZE INSERT INTO t2 SELECT phone, name FROM users")
    assert {w.target for w in lin.writes} == {"table t2"}
    assert my("EXPLAIN SELECT phone FROM users").outputs == ()


def test_cache_is_keyed_by_catalog_version() -> None:
    lineage_mod.cache_clear()
    c1 = Catalog({("app", "users"): ("id",)}, version=1)
    c2 = Catalog({("app", "users"): ("id", "phone")}, version=2)
    a = output_lineage("SELECT * FROM users", "mysql", catalog=c1, database="app")
    b = output_lineage("SELECT * FROM users", "mysql", catalog=c2, database="app")
    assert len(a.outputs) == 1 and len(b.outputs) == 2
    assert output_lineage("SELECT * FROM users", "mysql", catalog=c2, database="app") is b
    assert "1 hits" in lineage_mod.cache_info()


def test_never_raises_on_garbage() -> None:
    for sql in ("", ";", "SELECT (((", "/*! unterminated", "SELECT 'x", "\x00\x01"):
        lin = my(sql)
        assert isinstance(lin, Lineage)
