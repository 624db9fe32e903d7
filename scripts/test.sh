#!/usr/bin/env bash
# The test suite (what CI runs): set up, then pytest on test/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
venv="${FCNSEG_VENV:-$root/.venv}"
cd "$root"
export PATH="$venv/bin:$PATH"
exec "$venv/bin/python" -m pytest -q test "$@"
