#!/usr/bin/env bash
# Grade the mechat server in the current directory, a student's repository,
# with the conformance kit:
#
#   bash .github/classroom/grade.sh [mechat conform options...]
#   bash .github/classroom/grade.sh --only §2
#   bash .github/classroom/grade.sh --format junit --output conform.xml
#
# It starts ./run-server PORT, waits until the port accepts connections,
# runs `mechat conform --port PORT` with the options it was given, stops the
# server, and exits with the kit's status: 0 if every check passed, 1 if any
# failed or was skipped, 2 if the server never started or an option is
# wrong.  GitHub Classroom's command grader awards a step's points on 0.
#
# Environment: PORT (default 7878), STARTUP_SECONDS, how long the server may
# take to accept connections (default 10).
set -euo pipefail

PORT="${PORT:-7878}"
STARTUP_SECONDS="${STARTUP_SECONDS:-10}"

server_log="$(mktemp)"
server_pid=""

port_open() {
  # Try one connection; succeed if something accepts it.
  python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()' \
    "$PORT" 2>/dev/null
}

start_server() {
  # Start ./run-server PORT in the background, its output in server_log.
  # (Windows loses the executable bit; give it back rather than fail on it.)
  if [[ -f run-server && ! -x run-server ]]; then
    chmod +x run-server
  fi
  # set -m gives the server a process group of its own, numbered by its PID,
  # so that stopping the group also stops whatever run-server started (a
  # build, a JVM...) without touching any other process.
  set -m
  ./run-server "$PORT" </dev/null >"$server_log" 2>&1 &
  server_pid=$!
  set +m
}

wait_for_server() {
  # Succeed once the port accepts connections; fail if the server exits first, or takes too long.
  local deadline=$((SECONDS + STARTUP_SECONDS))
  while ((SECONDS < deadline)); do
    if port_open; then
      return 0
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
      return 1
    fi
    sleep 0.1
  done
  return 1
}

# shellcheck disable=SC2317  # run by the EXIT trap, which shellcheck does not follow
stop_server() {
  # Stop the server's process group: TERM, then KILL if it is still there after 5 s.
  if [[ -n "$server_pid" ]]; then
    kill -TERM -- "-$server_pid" 2>/dev/null || kill -TERM "$server_pid" 2>/dev/null || true
    local deadline=$((SECONDS + 5))
    while kill -0 "$server_pid" 2>/dev/null && ((SECONDS < deadline)); do
      sleep 0.1
    done
    kill -KILL -- "-$server_pid" 2>/dev/null || kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true # reap it: no process is left behind, not even a zombie
  fi
  rm -f "$server_log"
}

show_server_output() {
  # Print the end of what the server printed, for the student reading the Actions log.
  echo "--- what ./run-server $PORT printed (the last 30 lines) ---" >&2
  tail -n 30 "$server_log" >&2
}

run_kit() {
  # Run `mechat conform` on the options given.  Not `python3 -m mechat`:
  # that looks in the current directory first, and a student's repository
  # may hold a package of its own called mechat.  So the current directory
  # comes off the module path, and the kit's own command line runs.
  python3 -c 'import sys; del sys.path[0]; from mechat.__main__ import main; sys.exit(main(["conform", *sys.argv[1:]]))' \
    "$@"
}

trap stop_server EXIT
# A signal ends the script through exit, so the trap above still stops the server.
trap 'exit 130' INT
trap 'exit 143' TERM

if port_open; then
  echo "grade.sh: port $PORT is in use before the server starts; set PORT to a free one" >&2
  exit 2
fi
start_server
if ! wait_for_server; then
  echo "grade.sh: your server did not start: nothing accepted connections on port $PORT" \
    "within $STARTUP_SECONDS s of running ./run-server $PORT" >&2
  show_server_output
  exit 2
fi
status=0
run_kit --port "$PORT" "$@" || status=$?
if ((status != 0)); then
  show_server_output
fi
exit "$status"
