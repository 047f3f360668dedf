#!/usr/bin/env bash
# Make sure MariaDB and PostgreSQL answer on their usual local ports; start them when they are
# installed but stopped; say clearly what is missing otherwise. Redis is checked, not required.
set -u

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 60); do port_open "$1" "$2" && return 0; sleep 0.5; done
  return 1
}

fail=0
MYSQL_HOST=${DBWARD_TEST_MYSQL_HOST:-127.0.0.1}; MYSQL_PORT=${DBWARD_TEST_MYSQL_PORT:-3306}
PG_HOST=${DBWARD_TEST_PG_HOST:-127.0.0.1}; PG_PORT=${DBWARD_TEST_PG_PORT:-5432}

if ! port_open "$MYSQL_HOST" "$MYSQL_PORT"; then
  if [ -x /usr/sbin/mariadbd ]; then
    echo "MariaDB is not answering on $MYSQL_HOST:$MYSQL_PORT; starting it."
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    wait_port "$MYSQL_HOST" "$MYSQL_PORT" || { echo "MariaDB did not start: see its error log." >&2; fail=1; }
  else
    echo "MariaDB is not installed and nothing answers on $MYSQL_HOST:$MYSQL_PORT: install mariadb-server, or set DBWARD_TEST_MYSQL_HOST/PORT to a running server." >&2
    fail=1
  fi
fi

if ! port_open "$PG_HOST" "$PG_PORT"; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "PostgreSQL is not answering on $PG_HOST:$PG_PORT; starting it."
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
    wait_port "$PG_HOST" "$PG_PORT" || { echo "PostgreSQL did not start: see /var/log/postgresql." >&2; fail=1; }
  else
    echo "PostgreSQL is not installed and nothing answers on $PG_HOST:$PG_PORT: install postgresql, or set DBWARD_TEST_PG_HOST/PORT to a running server." >&2
    fail=1
  fi
fi

if ! port_open 127.0.0.1 6379; then
  if command -v redis-server >/dev/null; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null || true
  fi
fi

[ $fail -eq 0 ] && echo "services: MariaDB $MYSQL_HOST:$MYSQL_PORT and PostgreSQL $PG_HOST:$PG_PORT are answering."
exit $fail
