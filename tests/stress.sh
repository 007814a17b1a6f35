#!/usr/bin/env bash
# Run the whole test suite again and again, from a fresh clone, with the
# other cores kept busy, and name every test that failed in any run.
#
#   tests/stress.sh [RUNS] [TOX_ENV]        defaults: 10 runs of py39
#
# A test that passes on an idle machine and fails on a busy one is broken:
# CI machines are slow and shared.  This is how the suite is checked for
# that.  Each run is the tox environment's own command (the suite under
# coverage, as CI runs it).  The clone is of the commit checked out here, so
# uncommitted changes are not tested; tox is installed with pip if missing,
# and the tox environment is built once, then reused.  One busy loop per core
# but one keeps the rest of the machine loaded; each is stopped, by its PID,
# when the script ends, and none outlives MAX_BURN seconds.  Logs stay in the
# work folder, whose name is printed.
#
# Exit status: 0 if every run passed, 1 if any failed, 2 on a usage error.
set -euo pipefail

RUNS="${1:-10}"
TOX_ENV="${2:-py39}"
MAX_BURN=$((6 * 3600))

case "$RUNS" in
    '' | *[!0-9]* | 0)
        echo "usage: tests/stress.sh [RUNS] [TOX_ENV]   (RUNS is a whole number above 0)" >&2
        exit 2
        ;;
esac

REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mechat-stress.XXXXXX")"
BURNERS=()

stop_burners() {
    for pid in "${BURNERS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
}
trap stop_burners EXIT

git clone --quiet "$REPO" "$WORK/clone"
cd "$WORK/clone"
echo "stress: $RUNS runs of tox -e $TOX_ENV on $(git rev-parse --short HEAD), logs in $WORK"
{
    python3 -m pip install --quiet --disable-pip-version-check tox &&
        python3 -m tox -e "$TOX_ENV" --notest
} >"$WORK/setup.log" 2>&1 || {
    echo "stress: could not build the tox environment; see $WORK/setup.log" >&2
    exit 1
}

for _ in $(seq 2 "$(nproc)"); do
    timeout "$MAX_BURN" python3 -c 'while True: pass' &
    BURNERS+=("$!")
done
echo "stress: $((${#BURNERS[@]})) busy loop(s) on the other core(s)"

# Print the id of each test that pytest's summary in log file $1 names as
# failed; an id may hold spaces (a parameter), so cut at " - ", not at a space.
failed_tests() {
    sed -nE 's/^(FAILED|ERROR) (.*)$/\2/p' "$1" | sed 's/ - .*$//'
}

failed_runs=0
for run in $(seq 1 "$RUNS"); do
    log="$WORK/run-$run.log"
    start=$SECONDS
    if python3 -m tox -e "$TOX_ENV" >"$log" 2>&1; then
        echo "run $run: passed in $((SECONDS - start)) s"
    else
        failed_runs=$((failed_runs + 1))
        echo "run $run: FAILED in $((SECONDS - start)) s ($log)"
        # pytest's summary names each failed test; a crash or a coverage
        # shortfall leaves no such line, so say where to look instead.
        failed_tests "$log" | sed 's/^/    /'
        grep -qE '^(FAILED|ERROR) ' "$log" || echo "    no failed test named: see the log's end"
    fi
done

echo "stress: $((RUNS - failed_runs)) of $RUNS runs passed"
if ((failed_runs > 0)); then
    echo "stress: tests that failed, with the number of runs each failed in:"
    for log in "$WORK"/run-*.log; do failed_tests "$log"; done | sort | uniq -c | sort -rn
    exit 1
fi
