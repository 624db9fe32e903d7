#!/usr/bin/env bash
# Create .venv and install requirements.txt plus this package (editable); a no-op when up to date.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${FCNSEG_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
stamp="$venv/.fcnseg-installed"
wanted="$(cat "$root/requirements.txt" "$root/requirements-core.txt" "$root/setup.py" | sha256sum | cut -d" " -f1)"
if [ ! -x "$venv/bin/python" ]; then
  echo "creating virtual environment $venv"
  "$python" -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  echo "installing requirements into $venv (first run takes a few minutes)"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -r "$root/requirements.txt"
  "$venv/bin/python" -m pip install --quiet --no-deps -e "$root"
  echo "$wanted" > "$stamp"
fi
