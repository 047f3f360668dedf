#!/usr/bin/env bash
# Installs what the benchmark needs (Debian packages) and runs bench/run.py.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v pgbench >/dev/null || need+=(postgresql-contrib)
command -v sysbench >/dev/null || need+=(sysbench)
command -v pgbouncer >/dev/null || need+=(pgbouncer)
command -v socat >/dev/null || need+=(socat)
command -v mariadb >/dev/null || need+=(mariadb-client)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing benchmark tools: ${need[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
bash scripts/ensure-services.sh
exec .venv/bin/python bench/run.py "$@"
