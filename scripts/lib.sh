# Shared by scripts/*: install what a fresh Debian machine lacks.
# Sourced, not run.

need_root_or_sudo() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "error: need root (or sudo) to run: $*" >&2; return 1; fi
}

# redis-server: the speed layer's store and the test harness's Redis.
ensure_redis() {
  # redis-cli (package redis-tools, a dependency of redis-server) creates the
  # Redis Cluster of the cluster tests.
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
  echo "== installing redis-server and redis-tools (apt-get)" >&2
  need_root_or_sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  need_root_or_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
  # The package may start a system instance; tests start their own on free ports.
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null
}

# Building librdkafka from source (the rdkafka crate's bundled copy) needs a C
# toolchain and make; check early and install them if missing.
ensure_build_tools() {
  local missing=()
  for t in cc make; do command -v "$t" >/dev/null || missing+=("$t"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing build tools (apt-get): ${missing[*]}" >&2
    need_root_or_sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    need_root_or_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential >/dev/null
  fi
  command -v cargo >/dev/null || { echo "error: cargo not found; install a Rust toolchain (rustup)" >&2; return 1; }
}

# DuckDB's Python package: the interoperability test reads our Parquet with it.
ensure_duckdb() {
  command -v python3 >/dev/null || {
    echo "== installing python3 (apt-get)" >&2
    need_root_or_sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    need_root_or_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-pip >/dev/null
  }
  python3 -c 'import duckdb' 2>/dev/null && return 0
  echo "== installing duckdb (pip)" >&2
  python3 -m pip install --quiet --disable-pip-version-check duckdb 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages duckdb
  python3 -c 'import duckdb'
}

# schemathesis (PyPI) for scripts/schemathesis.
ensure_schemathesis() {
  ensure_duckdb  # python3 and pip
  command -v st >/dev/null && st --version >/dev/null 2>&1 && return 0
  echo "== installing schemathesis (pip)" >&2
  python3 -m pip install --quiet --disable-pip-version-check schemathesis 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages schemathesis
  command -v st >/dev/null || export PATH="$HOME/.local/bin:$PATH"
  st --version >/dev/null
}

# Headless Chromium and a DevTools-protocol client for the dashboard check.
ensure_chromium() {
  command -v chromium >/dev/null || {
    echo "== installing chromium (apt-get)" >&2
    need_root_or_sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    need_root_or_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  }
  ensure_duckdb  # python3 and pip
  python3 -c 'import websocket' 2>/dev/null && return 0
  echo "== installing websocket-client (pip)" >&2
  python3 -m pip install --quiet --disable-pip-version-check websocket-client 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages websocket-client
  python3 -c 'import websocket'
}

# cargo-nextest, the test runner scripts/test uses (machines of this kind
# have it; built from crates.io once where one does not).
ensure_nextest() {
  cargo nextest --version >/dev/null 2>&1 && return 0
  echo "== installing cargo-nextest (cargo install)" >&2
  cargo install --locked cargo-nextest >/dev/null
}

# cargo-fuzz (libFuzzer driver) for scripts/fuzz; built from crates.io once.
ensure_cargo_fuzz() {
  cargo fuzz --version >/dev/null 2>&1 && return 0
  echo "== installing cargo-fuzz (cargo install)" >&2
  cargo install --locked cargo-fuzz >/dev/null
}

# moto (PyPI) in server mode: the S3-compatible server the S3 tests start on
# loopback (infra::s3::S3Server runs `python3 -m moto.server`).
ensure_moto() {
  ensure_duckdb  # python3 and pip
  python3 -c 'import moto.server, flask' 2>/dev/null && return 0
  echo "== installing moto[server] (pip)" >&2
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]' 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages 'moto[server]'
  python3 -c 'import moto.server, flask'
}

# promtool (Debian's prometheus package): lints every service's /metrics in
# the tests and checks deploy/prometheus.yml.
ensure_promtool() {
  command -v promtool >/dev/null && return 0
  echo "== installing promtool (apt-get install prometheus)" >&2
  need_root_or_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 || {
    need_root_or_sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    need_root_or_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  }
  command -v promtool >/dev/null
}

# jsonschema and PyYAML (PyPI) for scripts/py/check_deploy.py.
ensure_deploy_check() {
  ensure_duckdb  # python3 and pip
  ensure_promtool
  python3 -c 'import jsonschema, yaml' 2>/dev/null && return 0
  echo "== installing jsonschema and pyyaml (pip)" >&2
  python3 -m pip install --quiet --disable-pip-version-check jsonschema pyyaml 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages jsonschema pyyaml
  python3 -c 'import jsonschema, yaml'
}

# tansu (crates.io), an Apache-Kafka-compatible broker that is not
# librdkafka's mock cluster, with its SQLite storage, for
# `scripts/soak --broker tansu`. Built once (release, ~25 minutes on 2
# cores) into its own directory, never into the project's target/; prints
# the binary's path.
TANSU_VERSION=0.6.0
ensure_tansu() {
  local root="${VIEWCOUNT_TOOLS:-$HOME/.cache/viewcount}/tansu-$TANSU_VERSION"
  if [[ ! -x "$root/bin/tansu" ]]; then
    ensure_build_tools
    echo "== installing tansu $TANSU_VERSION (cargo install, features libsql; once)" >&2
    CARGO_TARGET_DIR="$root/target" cargo install "tansu@$TANSU_VERSION" \
      --features libsql --locked --root "$root" >&2
    rm -rf "$root/target"
  fi
  echo "$root/bin/tansu"
}
