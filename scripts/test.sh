#!/usr/bin/env bash
# The test command (README, CI): install what the tests need, lint, check formatting, run the suite.
#
#   scripts/test.sh                 # everything (needs root for the network-namespace lab)
#   scripts/test.sh tests/unit -x   # extra arguments go to pytest
#
# pytest's "no tests collected" (exit 5) fails too: a green run must have run tests.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"

scripts/install-test-deps.sh >/dev/null

echo "== ruff check" >&2
"$py" -m ruff check .
echo "== ruff format --check" >&2
"$py" -m ruff format --check .
# Layers and types: reported, and they fail the run, but the suite still runs after them.
static=0
echo "== lint-imports (layers and no cycles: pyproject [tool.importlinter], docs/architecture.md)" >&2
lint-imports || static=1
echo "== mypy (pyproject [tool.mypy])" >&2
"$py" -m mypy || static=1
echo "== pytest" >&2
set +e
# -rs: every skip listed with its reason (tests/conftest.py fails CI on unlisted ones).
# -n 2 --dist loadfile: two workers, a test file (and its module lab) always on one of them; the suite
# mostly waits on real clusters, so two at once roughly halve the wall time (FOUNDATION_TEST_WORKERS=0: serial).
"$py" -m pytest -q -rs -n "${FOUNDATION_TEST_WORKERS:-2}" --dist loadfile "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing (CI needs tests)" >&2
fi
if [ "$status" -eq 0 ] && [ "$static" -ne 0 ]; then
  echo "lint-imports or mypy failed (see above)" >&2
  status=1
fi
exit "$status"
