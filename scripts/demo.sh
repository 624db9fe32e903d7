#!/usr/bin/env bash
# The main job on the bundled default: set up, start the node, stream the sample frames over DDS,
# save the masks and overlays it returns to demo_output/ and print a summary.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
venv="${FCNSEG_VENV:-$root/.venv}"
cd "$root"
exec "$venv/bin/fcnseg" demo --out "${1:-demo_output}"
