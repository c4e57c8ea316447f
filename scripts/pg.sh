#!/usr/bin/env bash
# A throw-away PostgreSQL server for tests and labs (docs/store.md, "PostgreSQL backend").
#
#   scripts/pg.sh start DIR   initdb in DIR, start the server, print its locator
#   scripts/pg.sh stop DIR    stop it and delete its files (MCIM_PG_KEEP=1 keeps them)
#
# The server listens on a unix socket in its folder and on 127.0.0.1 at a free port, with
# durability on (fsync, synchronous_commit, full_page_writes: the defaults, written out).
# Its superuser is "mcim" with a random password: TCP clients authenticate with it
# (scram-sha-256), the socket is trusted (its folder is 0700). DIR/locator holds
#   postgres://mcim:PASSWORD@127.0.0.1:PORT/mcim
# (mode 0600); tests make a database of their own next to "mcim" and use the same locator
# with their database's name in place of the last path element.
#
# PostgreSQL refuses to run as root: as root, the server runs as the "postgres" user (made by
# Debian's postgresql package; "nobody" when it does not exist) and its files belong to it.
# When that user cannot reach DIR (a clone under /root, 0700), the server's files go to a
# private folder under ${TMPDIR:-/tmp} instead, named in DIR/server_dir.
#
# Needs the server binaries (scripts/deps.sh: postgresql); MCIM_PG_BIN names their folder
# (default: the newest /usr/lib/postgresql/*/bin).
set -euo pipefail

die() { echo "pg.sh: $*" >&2; exit 1; }
usage() { echo "usage: scripts/pg.sh start|stop DIR" >&2; exit 2; }

[ $# -eq 2 ] || usage
cmd=$1
mkdir -p "$2"
dir=$(cd "$2" && pwd)

pg_bin=${MCIM_PG_BIN:-}
if [ -z "$pg_bin" ]; then
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
fi
for t in initdb pg_ctl postgres psql; do
  [ -x "$pg_bin/$t" ] || die "no $t in '${pg_bin:-/usr/lib/postgresql/*/bin}' (install postgresql: scripts/deps.sh)"
done

# Who runs the server, and how to run a command as that user.
run_user=""
if [ "$(id -u)" -eq 0 ]; then
  if id postgres >/dev/null 2>&1; then run_user=postgres; else run_user=nobody; fi
fi
as_server() {
  if [ -n "$run_user" ]; then runuser -u "$run_user" -- "$@"; else "$@"; fi
}

server_dir() { # where the server's files are: DIR, or the folder DIR/server_dir names
  if [ -f "$dir/server_dir" ]; then cat "$dir/server_dir"; else echo "$dir/server"; fi
}

stop_server() {
  local sd
  sd=$(server_dir)
  if [ -f "$sd/data/postmaster.pid" ]; then
    as_server "$pg_bin/pg_ctl" -D "$sd/data" -m fast -w -t 60 stop >/dev/null 2>&1 ||
      as_server "$pg_bin/pg_ctl" -D "$sd/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
  if [ "${MCIM_PG_KEEP:-0}" != 1 ]; then
    rm -rf "$sd"
    rm -f "$dir/server_dir" "$dir/locator" "$dir/port"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_server() {
  local sd pw port started=0 attempt
  stop_server # a server left behind by an interrupted run: start afresh
  rm -f "$dir/locator"

  sd="$dir/server"
  if [ -n "$run_user" ] && ! runuser -u "$run_user" -- test -x "$dir" 2>/dev/null; then
    sd=$(mktemp -d "${TMPDIR:-/tmp}/mcim-pg.XXXXXX")
    echo "$sd" >"$dir/server_dir"
  fi
  # The socket path must fit in sun_path (107 bytes): ".s.PGSQL.65535" is 14 of them.
  if [ "${#sd}" -gt 90 ]; then
    rm -rf "$sd"
    sd=$(mktemp -d /tmp/mcim-pg.XXXXXX)
    echo "$sd" >"$dir/server_dir"
  fi
  mkdir -p "$sd"
  chmod 700 "$sd"
  [ -z "$run_user" ] || chown "$run_user" "$sd"

  pw=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  (umask 077 && printf '%s\n' "$pw" >"$sd/pwfile")
  [ -z "$run_user" ] || chown "$run_user" "$sd/pwfile"
  as_server "$pg_bin/initdb" -D "$sd/data" -U mcim --pwfile="$sd/pwfile" -E UTF8 --locale=C \
    --auth-local=trust --auth-host=scram-sha-256 --no-instructions >"$sd/initdb.log" 2>&1 ||
    die "initdb failed: $(tail -n 5 "$sd/initdb.log")"
  rm -f "$sd/pwfile"

  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    cat >"$sd/data/mcim.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sd'
unix_socket_permissions = 0700
# durability is real: every commit reaches the disk
fsync = on
synchronous_commit = on
full_page_writes = on
# a lab: six roles, each a pool of (threads + workers) connections; tests in parallel
max_connections = 300
shared_buffers = 32MB
log_destination = 'stderr'
logging_collector = off
log_line_prefix = '%m [%p] %d '
log_min_messages = warning
# no DETAIL lines in the server's log either: they quote key values and whole rows
log_error_verbosity = terse
EOF
    [ -z "$run_user" ] || chown "$run_user" "$sd/data/mcim.conf"
    grep -q "^include 'mcim.conf'" "$sd/data/postgresql.conf" ||
      echo "include 'mcim.conf'" | as_server tee -a "$sd/data/postgresql.conf" >/dev/null
    if as_server "$pg_bin/pg_ctl" -D "$sd/data" -l "$sd/server.log" -w -t 60 start >/dev/null 2>&1; then
      started=1
      break
    fi
    # the port was taken between the check and the start: another one
    grep -q "could not bind\|Address already in use" "$sd/server.log" 2>/dev/null ||
      die "the server did not start (attempt $attempt): $(tail -n 5 "$sd/server.log" 2>/dev/null)"
  done
  [ "$started" -eq 1 ] || die "no free port found for the server"

  as_server "$pg_bin/psql" -h "$sd" -p "$port" -U mcim -d postgres -qAtX -v ON_ERROR_STOP=1 \
    -c "CREATE DATABASE mcim" >/dev/null || die "cannot create the database mcim"
  (umask 077 && echo "postgres://mcim:$pw@127.0.0.1:$port/mcim" >"$dir/locator")
  echo "$port" >"$dir/port"
  cat "$dir/locator"
}

case "$cmd" in
start) start_server ;;
stop) stop_server ;;
*) usage ;;
esac
