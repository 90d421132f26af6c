# Shared by the quick-start scripts: a virtualenv in .venv with fleetwatch installed (editable)
# with the extras asked for, reinstalled only when pyproject.toml changed.
set -euo pipefail

ensure_venv() {
    local extras="$1"
    local python="${PYTHON:-python3}"
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "fleetwatch needs Python 3.11 or newer as $python (set PYTHON=...)" >&2
        exit 1
    fi
    if [ ! -x .venv/bin/python ]; then
        if ! "$python" -m venv .venv 2>/dev/null; then
            rm -rf .venv
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
                echo "installing python3-venv (needed for a virtualenv)" >&2
                apt-get install -y -q python3-venv >/dev/null || {
                    apt-get update -q >/dev/null && apt-get install -y -q python3-venv >/dev/null
                }
                "$python" -m venv .venv
            else
                echo "cannot create a virtualenv: install python3-venv (sudo apt-get install python3-venv)" >&2
                exit 1
            fi
        fi
    fi
    local stamp=".venv/.fleetwatch-installed-$extras"
    local want
    want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "installing fleetwatch[$extras] into .venv" >&2
        .venv/bin/python -m pip install -q --upgrade pip >/dev/null
        .venv/bin/python -m pip install -q -e ".[$extras]"
        echo "$want" > "$stamp"
    fi
}
