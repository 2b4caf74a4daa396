#!/usr/bin/env bash
# The Python client (clients/python): its virtualenv, lint, type check and
# tests.
#
#   hack/python.sh venv            # make (or reuse) the venv; prints its path
#   hack/python.sh test [ARGS]     # venv, ruff, mypy, then pytest ARGS (all tests,
#                                  # the e2e ones against the local cluster)
#   hack/python.sh run CMD [ARGS]  # CMD from the venv (python, pytest, ruff, ...)
#   hack/python.sh browser [ARGS]  # the web view's browser test (tests/browser):
#                                  # Chromium (hack/chromium.sh), its venv, ruff,
#                                  # mypy, then pytest ARGS
#   hack/python.sh worker [ARGS]   # the worker SDK (clients/python-worker): its
#                                  # venv, ruff, mypy, then pytest ARGS (with the
#                                  # drift test of the generated gRPC code)
#   hack/python.sh worker-venv     # make (or reuse) the worker SDK's venv; prints
#                                  # its path (tests/workers.rs runs a Python worker)
#
# The venv is cached outside the repo, under
# $VISION_CACHE_DIR/python/venv-<key> (~/.cache/vision-operator by default),
# keyed by clients/python/pyproject.toml, the Python version and this
# checkout's path (the client is installed editable: the venv points into
# the checkout). A change of any of them makes a new venv, which removes
# the older ones of the same checkout; a venv appears only once complete (a
# marker file written last), and builds are serialised with flock.
# Packages come from PyPI (pip's own cache makes a rebuild cheap). PYTHON
# picks the interpreter (default python3, >= 3.10); when its venv module is
# missing (Debian without python3-venv) the package is installed with
# apt-get.
#
# The e2e tests need a running cluster (hack/cluster.sh up) and the operator
# binary (target/debug/vision-operator, built by cargo test or
# `cargo build --workspace --bins --tests --features e2e`); hack/test.sh runs
# them after the cargo tests.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLIENT="$ROOT/clients/python"
CACHE="${VISION_CACHE_DIR:-$HOME/.cache/vision-operator}/python"
LOGS="$ROOT/.local/logs"
PYTHON="${PYTHON:-python3}"

die() { echo "[python] $*" >&2; exit 1; }

ensure_python() {
  command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set PYTHON=/path/to/python3.10+)"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "$PYTHON is $("$PYTHON" -V 2>&1); the client needs Python >= 3.10"
  if "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then return; fi
  # Debian and Ubuntu ship venv/ensurepip apart from python3.
  command -v apt-get >/dev/null || die "$PYTHON has no venv/ensurepip module; install it (python3-venv)"
  local pkg
  pkg="python3-venv python$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv"
  echo "[python] installing $pkg with apt-get" >&2
  mkdir -p "$LOGS"
  # shellcheck disable=SC2086 # two package names
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkg >"$LOGS/python-apt.log" 2>&1; then
    apt-get update >>"$LOGS/python-apt.log" 2>&1
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkg >>"$LOGS/python-apt.log" 2>&1 ||
      die "apt-get install $pkg failed (log: $LOGS/python-apt.log)"
  fi
  "$PYTHON" -c 'import venv, ensurepip' || die "$PYTHON still has no venv module"
}

# Prints the venv's path, building it first if needed. With a project
# directory (tests/browser) the venv has that project too, installed beside
# the client, keyed also by its pyproject.toml and named venv-<dir>-<key>.
ensure_venv() {
  ensure_python
  local extra="${1:-}" kind=venv key venv
  [ -z "$extra" ] || kind="venv-$(basename "$extra")"
  key="$({ cat "$CLIENT/pyproject.toml"; [ -z "$extra" ] || cat "$extra/pyproject.toml"; "$PYTHON" -VV; echo "$ROOT"; } | sha256sum | cut -c1-16)"
  venv="$CACHE/$kind-$key"
  if [ ! -e "$venv/.complete" ]; then
    mkdir -p "$CACHE" "$LOGS"
    exec 9>"$venv.lock"
    flock 9
    if [ ! -e "$venv/.complete" ]; then
      echo "[python] creating $venv (log: $LOGS/python-venv.log)" >&2
      rm -rf "$venv"
      if ! {
        "$PYTHON" -m venv "$venv" &&
          "$venv/bin/python" -m pip install --disable-pip-version-check -q --upgrade pip &&
          "$venv/bin/python" -m pip install --disable-pip-version-check -q -e "$CLIENT[test]" ${extra:+-e "$extra"}
      } >"$LOGS/python-venv.log" 2>&1; then
        tail -n 30 "$LOGS/python-venv.log" >&2
        rm -rf "$venv"
        die "creating the venv failed"
      fi
      echo "$ROOT" >"$venv/.root"
      touch "$venv/.complete"
      # Older venvs of this checkout (another pyproject.toml) are not used again.
      local old
      for old in "$CACHE/$kind"-*/.root; do
        # Only this kind's (venv-<16 hex>, not venv-browser-<16 hex>).
        case "${old%/.root}" in "$CACHE/$kind-"????????????????) ;; *) continue ;; esac
        [ -e "$old" ] && [ "${old%/.root}" != "$venv" ] && [ "$(cat "$old")" = "$ROOT" ] || continue
        rm -rf "${old%/.root}" "${old%/.root}.lock"
      done
    fi
    flock -u 9
    exec 9>&-
  fi
  echo "$venv"
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  venv)
    ensure_venv ;;
  run)
    [ $# -gt 0 ] || die "usage: hack/python.sh run CMD [ARGS]"
    venv="$(ensure_venv)"
    cd "$CLIENT"
    exec "$venv/bin/$1" "${@:2}" ;;
  test)
    venv="$(ensure_venv)"
    cd "$CLIENT"
    echo "[python] ruff check" >&2
    "$venv/bin/ruff" check --no-cache src tests
    echo "[python] ruff format --check" >&2
    "$venv/bin/ruff" format --no-cache --check src tests
    echo "[python] mypy" >&2
    "$venv/bin/mypy" --cache-dir "$CACHE/mypy-cache" src tests
    echo "[python] pytest" >&2
    exec "$venv/bin/pytest" -p no:cacheprovider "$@" ;;
  worker-venv)
    ensure_venv "$ROOT/clients/python-worker" ;;
  worker)
    worker="$ROOT/clients/python-worker"
    venv="$(ensure_venv "$worker")"
    # Its test extra (grpcio-tools for gen.py and the drift test).
    if ! "$venv/bin/python" -c 'import grpc_tools' 2>/dev/null; then
      mkdir -p "$LOGS"
      "$venv/bin/python" -m pip install --disable-pip-version-check -q -e "$worker[test]" >>"$LOGS/python-venv.log" 2>&1 ||
        die "installing clients/python-worker[test] failed (log: $LOGS/python-venv.log)"
    fi
    cd "$worker"
    echo "[python] worker: ruff check" >&2
    "$venv/bin/ruff" check --no-cache src tests gen.py
    echo "[python] worker: ruff format --check" >&2
    "$venv/bin/ruff" format --no-cache --check src tests gen.py
    echo "[python] worker: mypy" >&2
    "$venv/bin/mypy" --cache-dir "$CACHE/mypy-cache-worker" src tests gen.py
    echo "[python] worker: pytest" >&2
    exec "$venv/bin/pytest" -p no:cacheprovider "$@" ;;
  browser)
    browser="$ROOT/tests/browser"
    chromium="$("$ROOT/hack/chromium.sh")" || die "hack/chromium.sh failed"
    # VISION_CHROMIUM=... and VISION_CHROMEDRIVER=... (no spaces in them)
    # shellcheck disable=SC2086
    export $chromium
    venv="$(ensure_venv "$browser")"
    cd "$browser"
    echo "[python] browser: ruff check" >&2
    "$venv/bin/ruff" check --no-cache .
    echo "[python] browser: ruff format --check" >&2
    "$venv/bin/ruff" format --no-cache --check .
    echo "[python] browser: mypy" >&2
    "$venv/bin/mypy" --cache-dir "$CACHE/mypy-cache-browser" .
    echo "[python] browser: pytest (screenshots: .local/artifacts/browser/)" >&2
    exec "$venv/bin/pytest" -p no:cacheprovider "$@" ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2 ;;
esac
