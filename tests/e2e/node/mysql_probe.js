// Node's mysql2 through dbward: text query, prepared statement (execute), a denied statement,
// a TLS connection. Prints one JSON object; the pytest side asserts it and the audit trail.
// Usage: node mysql_probe.js <port> <user> <password>
"use strict";
const mysql = require("mysql2/promise");

async function main() {
  const [port, user, password] = process.argv.slice(2);
  const base = { host: "127.0.0.1", port: Number(port), user, password, database: "dbward_test" };
  const out = {};
  const conn = await mysql.createConnection(base);
  const [rows] = await conn.query("SELECT id, name FROM customers ORDER BY id");
  out.query = rows.map((r) => [r.id, r.name]);
  const [prep] = await conn.execute("SELECT name, balance FROM customers WHERE id = ? AND email LIKE ?", [2, "%@example.com"]);
  out.execute = prep.map((r) => [r.name, String(r.balance)]);
  try {
    await conn.query("DELETE FROM customers WHERE id = 1");
    out.denied = null;
  } catch (e) {
    out.denied = { errno: e.errno, sqlState: e.sqlState, message: e.sqlMessage };
  }
  const [after] = await conn.query("SELECT COUNT(*) AS n FROM customers");
  out.after = after[0].n;
  await conn.end();
  const tls = await mysql.createConnection({ ...base, ssl: { rejectUnauthorized: false } });
  const [t] = await tls.query("SELECT 'tls' AS x");
  out.tls = t[0].x;
  await tls.end();
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e));
  process.exit(1);
});
