#!/usr/bin/env bash
# Real clients the compatibility tests drive: the mariadb and psql command-line clients, the
# JDBC drivers from Debian's packages, and Node drivers from npm (installed under .test-tools/).
set -eu
cd "$(dirname "$0")/.."

need_apt=()
command -v mariadb >/dev/null || need_apt+=(mariadb-client)
command -v psql >/dev/null || need_apt+=(postgresql-client)
command -v pg_dump >/dev/null || need_apt+=(postgresql-client)
command -v pgbench >/dev/null || need_apt+=(postgresql-contrib)
ls /usr/share/java/mariadb-java-client*.jar >/dev/null 2>&1 || need_apt+=(libmariadb-java)
ls /usr/share/java/postgresql*.jar >/dev/null 2>&1 || need_apt+=(libpostgresql-jdbc-java)
command -v javac >/dev/null || need_apt+=(default-jdk-headless)
command -v node >/dev/null || need_apt+=(nodejs npm)
# the console browser tests drive Debian's chromium with Playwright (no browser download)
command -v chromium >/dev/null || need_apt+=(chromium)

if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing test clients: ${need_apt[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing test clients (install them with apt-get): ${need_apt[*]}" >&2
    exit 1
  fi
fi

if [ -f tests/e2e/node/package.json ] && command -v npm >/dev/null; then
  if [ ! -d tests/e2e/node/node_modules ] || [ tests/e2e/node/package.json -nt tests/e2e/node/node_modules ]; then
    (cd tests/e2e/node && npm install --no-audit --no-fund --silent >/dev/null && touch node_modules)
  fi
fi
