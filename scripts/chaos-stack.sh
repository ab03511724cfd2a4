# shellcheck shell=bash
# A private stack for scripts/chaos: its own PostgreSQL cluster, Redis and
# Tansu broker on their own ports under .stack/chaos, so faults injected here
# never touch the shared services on 5432/6379/9092 that other tests use.
# Source it after lib.sh. Every process started here is recorded by PID and
# stopped by chaos_stop_all (the caller traps it on EXIT).

CHAOS_DIR="$STACK_DIR/chaos"
mkdir -p "$CHAOS_DIR"

# PIDs of what this shell started (engines and load generators are in CHAOS_PIDS).
REDIS_PID=""
BROKER_PID=""
CHAOS_PIDS=()
PG_STARTED=0

# The first port at or after $1 that nothing listens on.
free_port() {
  local port=$1
  while port_open 127.0.0.1 "$port"; do port=$((port + 1)); done
  echo "$port"
}

# Runs a PostgreSQL server binary as the postgres user (initdb refuses root).
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_bin_dir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
  if [ -z "$dir" ] || [ ! -x "$dir/initdb" ]; then
    # A fresh machine: lib.sh's ensure_postgres installs the server packages
    # (in a subshell, so the shared cluster's settings do not leak into ours).
    (ensure_postgres) >&2 || die "could not install PostgreSQL"
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
  fi
  [ -x "$dir/initdb" ] || die "no initdb under /usr/lib/postgresql/*/bin"
  echo "$dir"
}

# --- PostgreSQL -------------------------------------------------------------

pg_start() {
  as_pg "$PG_BIN/pg_ctl" -D "$CHAOS_DIR/pg/data" -l "$CHAOS_DIR/pg/postgres.log" -w -t 30 \
    -o "-p $CHAOS_PG_PORT -c listen_addresses=127.0.0.1 -k $CHAOS_DIR/pg -c max_connections=200" start >/dev/null \
    || { tail -n 20 "$CHAOS_DIR/pg/postgres.log" >&2; die "the private PostgreSQL did not start"; }
  PG_STARTED=1
}

pg_stop() {
  [ "$PG_STARTED" = 1 ] || return 0
  as_pg "$PG_BIN/pg_ctl" -D "$CHAOS_DIR/pg/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
  PG_STARTED=0
}

# The fault: a fast restart (open connections are cut, in-flight transactions roll back).
pg_restart() {
  as_pg "$PG_BIN/pg_ctl" -D "$CHAOS_DIR/pg/data" -l "$CHAOS_DIR/pg/postgres.log" -m fast -w -t 60 \
    -o "-p $CHAOS_PG_PORT -c listen_addresses=127.0.0.1 -k $CHAOS_DIR/pg -c max_connections=200" restart >/dev/null \
    || die "the private PostgreSQL did not restart"
}

pg_pid() { head -n1 "$CHAOS_DIR/pg/data/postmaster.pid" 2>/dev/null; }

chaos_psql() { PGOPTIONS="-c client_min_messages=warning" psql -v ON_ERROR_STOP=1 -qtA -h 127.0.0.1 -p "$CHAOS_PG_PORT" -U postgres -d postgres "$@"; }

pg_setup() {
  PG_BIN=$(pg_bin_dir) || exit 1
  CHAOS_PG_PORT=$(free_port "${CHAOS_PG_PORT:-55432}")
  step "Private PostgreSQL ($PG_BIN) on 127.0.0.1:$CHAOS_PG_PORT, data in .stack/chaos/pg"
  rm -rf "$CHAOS_DIR/pg"
  mkdir -p "$CHAOS_DIR/pg"
  [ "$(id -u)" != 0 ] || chown postgres: "$CHAOS_DIR/pg"
  as_pg "$PG_BIN/initdb" -D "$CHAOS_DIR/pg/data" -A trust -U postgres -E UTF8 --no-sync >"$CHAOS_DIR/pg/initdb.log" 2>&1 \
    || { cat "$CHAOS_DIR/pg/initdb.log" >&2; die "initdb failed"; }
  pg_start
  chaos_psql -c "CREATE ROLE $ENGINE_ROLE LOGIN CREATEDB PASSWORD '$ENGINE_PASSWORD'" >/dev/null
}

# A fresh database per scenario, so each audit covers exactly that scenario.
pg_fresh_database() { # name
  chaos_psql -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null
  chaos_psql -c "CREATE DATABASE $1 OWNER $ENGINE_ROLE" >/dev/null
  echo "postgres://$ENGINE_ROLE:$ENGINE_PASSWORD@127.0.0.1:$CHAOS_PG_PORT/$1"
}

# --- Redis ------------------------------------------------------------------

redis_start() {
  command -v redis-server >/dev/null || apt_install redis-server
  # No persistence: it is a cache, and a restart must come back empty.
  redis-server --bind 127.0.0.1 --port "$CHAOS_REDIS_PORT" --save "" --appendonly no \
    --dir "$CHAOS_DIR" --logfile "$CHAOS_DIR/redis.log" --daemonize no >/dev/null 2>&1 &
  REDIS_PID=$!
  wait_for_port 127.0.0.1 "$CHAOS_REDIS_PORT" 15 || die "the private Redis did not open 127.0.0.1:$CHAOS_REDIS_PORT"
}

redis_stop() {
  [ -n "$REDIS_PID" ] || return 0
  kill "$REDIS_PID" 2>/dev/null || true
  wait "$REDIS_PID" 2>/dev/null || true
  REDIS_PID=""
}

redis_setup() {
  CHAOS_REDIS_PORT=$(free_port "${CHAOS_REDIS_PORT:-56379}")
  step "Private Redis on 127.0.0.1:$CHAOS_REDIS_PORT (no persistence)"
  redis_start
}

# --- Broker -----------------------------------------------------------------

broker_start() {
  "$TANSU" broker --listener-url "tcp://127.0.0.1:$CHAOS_BROKER_PORT" --advertised-listener-url "tcp://127.0.0.1:$CHAOS_BROKER_PORT" \
    --storage-engine memory://tansu/ >>"$CHAOS_DIR/broker.log" 2>&1 &
  BROKER_PID=$!
  wait_for_port 127.0.0.1 "$CHAOS_BROKER_PORT" 30 \
    || { tail -n 20 "$CHAOS_DIR/broker.log" >&2; die "the private broker did not open 127.0.0.1:$CHAOS_BROKER_PORT"; }
}

broker_stop() { # [signal]
  [ -n "$BROKER_PID" ] || return 0
  kill "-${1:-TERM}" "$BROKER_PID" 2>/dev/null || true
  wait "$BROKER_PID" 2>/dev/null || true
  BROKER_PID=""
}

broker_setup() {
  TANSU=$(broker_binary) || exit 1
  [ -x "$TANSU" ] || die "the broker binary was not found in $BROKER_PACKAGE"
  CHAOS_BROKER_PORT=$(free_port "${CHAOS_BROKER_PORT:-59092}")
  step "Private Tansu broker on 127.0.0.1:$CHAOS_BROKER_PORT (memory storage)"
  : >"$CHAOS_DIR/broker.log"
  broker_start
}

# --- Background processes (engines, load) -----------------------------------

# Forgets PIDs that have exited, so the list stays short.
chaos_forget() { # pid
  local kept=() p
  for p in "${CHAOS_PIDS[@]}"; do [ "$p" = "$1" ] || kept+=("$p"); done
  CHAOS_PIDS=("${kept[@]}")
}

# Stops one process we started: TERM, then KILL after a grace period.
stop_pid() { # pid [grace seconds]
  local pid=$1 grace=${2:-15} deadline
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; chaos_forget "$pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + grace))
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  chaos_forget "$pid"
}

chaos_stop_all() {
  local p c
  for p in "${CHAOS_PIDS[@]}"; do
    # A load running in a background subshell: its curl child first.
    for c in $(pgrep -P "$p" 2>/dev/null); do kill -TERM "$c" 2>/dev/null || true; done
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${CHAOS_PIDS[@]}"; do stop_pid "$p" 10; done
  redis_stop
  broker_stop
  pg_stop
}
