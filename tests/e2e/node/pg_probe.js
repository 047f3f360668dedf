// Node `pg` through dbward: simple and parameterised queries, a named prepared statement,
// an error, and the session staying usable. Usage: node pg_probe.js <port> <user> <password> <db>
const { Client } = require("pg");

async function main() {
  const [port, user, password, database] = process.argv.slice(2);
  const client = new Client({ host: "127.0.0.1", port: Number(port), user, password, database, ssl: false });
  await client.connect();
  const out = {};
  const r1 = await client.query("SELECT name FROM customers ORDER BY id");
  out.names = r1.rows.map((r) => r.name);
  const r2 = await client.query("SELECT name FROM customers WHERE id = $1", [2]);
  out.param = r2.rows[0].name;
  const r3 = await client.query({ name: "sum-series", text: "SELECT sum(g)::int AS s FROM generate_series(1, $1::int) g", values: [1000] });
  out.sum = r3.rows[0].s;
  try {
    await client.query("SELECT * FROM missing_table_x");
  } catch (e) {
    out.error = e.code;
  }
  const r4 = await client.query({ name: "sum-series", text: "SELECT sum(g)::int AS s FROM generate_series(1, $1::int) g", values: [1] });
  out.after = r4.rows[0].s;
  await client.end();
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
