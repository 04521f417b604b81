#!/usr/bin/env bash
# Run a command on one CPU core that a busy process competes for, as on Binder (one CPU) or a busy CI host:
#
#     tools/busy_core.sh COMMAND [ARG...]
#
# The command and a busy loop (`yes`) are pinned to the same core (the first this shell may use) with
# taskset; the busy loop lives exactly as long as the command: it is stopped when the command passes, fails
# or is interrupted, and the command's exit status is returned. BUSY_CORE_PID names it for the command.
# Without taskset (macOS) it says so and runs the command as is: an unpinned busy loop would only take
# another core and prove nothing.
set -u
if ! command -v taskset >/dev/null; then
  echo "busy_core: no taskset (macOS?): running unpinned, without a busy process" >&2
  exec "$@"
fi
core=$(taskset -pc $$ | sed 's/.*: //; s/[-,].*//')   # "pid N's current affinity list: 0-3" -> 0
taskset -pc "$core" $$ >/dev/null                     # this shell first: both children inherit the core
yes >/dev/null &
busy=$!
trap 'kill "$busy" 2>/dev/null; wait "$busy" 2>/dev/null' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
echo "busy_core: running on core $core beside a busy process (pid $busy)" >&2
BUSY_CORE_PID=$busy "$@"
