#!/bin/bash
# Paired A/B of this checkout against another commit: builds BASE in a scratch worktree (its own .venv,
# compiled like this one), then runs fastpath.bench.paired with A = BASE, B = this checkout.
#   tools/bench_ab.sh BASE [paired options...]      e.g. tools/bench_ab.sh HEAD~1 --kind stream
set -euo pipefail
base=${1:?usage: tools/bench_ab.sh BASE [python -m fastpath.bench.paired options]}
shift
root=$(cd "$(dirname "$0")/.." && pwd)
rev=$(git -C "$root" rev-parse --verify "$base^{commit}")
tree=${FASTPATH_AB_DIR:-${TMPDIR:-/tmp}/fastpath-ab-${rev:0:12}}
if [ ! -d "$tree/.git" ] && [ ! -f "$tree/.git" ]; then
  git -C "$root" worktree add --detach "$tree" "$rev" >/dev/null
fi
echo "A: $base ($rev) in $tree; B: this checkout ($(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet || echo ', with uncommitted changes'))"
make -C "$tree" setup compiled >"$tree/.ab-build.log" 2>&1 || { echo "building $base failed: see $tree/.ab-build.log"; exit 1; }
exec "$root/.venv/bin/python" -m fastpath.bench.paired --a "fastpath:$tree/.venv/bin/python" --b fastpath "$@"
