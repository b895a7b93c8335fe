#!/usr/bin/env bash
# The Python package's test command (tests/run-all.sh calls it; people run it too):
# a virtualenv under the cargo target dir (never committed), maturin and the package with its
# `test` extra installed from this folder (`pip install ./host/python[test]` builds the PyO3
# extension), the workspace's `ricochet` binary for the parity and cross-language tests, then
# pytest. Ends with pytest's own summary line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
venv=${RICOCHET_PYTHON_VENV:-$target/python-venv}
python=${PYTHON:-python3}

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "host/python needs Python >= 3.11; $python is $("$python" --version 2>&1)" >&2
    exit 1
}
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"

# The cargo on PATH builds both (rustup's, when both it and Debian's /usr/bin/cargo exist).
export CARGO_TARGET_DIR=$target
echo "building the ricochet binary (parity and fleet tests)"
(cd "$repo" && cargo build --quiet -p ricochet-cli --bin ricochet)
echo "pip install $here[test] (maturin builds the extension)"
"$venv/bin/python" -m pip install --quiet "maturin>=1.9.4,<2"
"$venv/bin/python" -m pip install --quiet "$here[test]"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
(cd "$here" && RICOCHET_BIN="$target/debug/ricochet" "$venv/bin/python" -m pytest tests -q -p no:cacheprovider "$@") 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
echo "python: $(tail -n 1 "$log")"
exit "$status"
