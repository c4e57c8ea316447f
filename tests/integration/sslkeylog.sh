#!/usr/bin/env bash
# SSLKEYLOGFILE (issue 5, operations): with the variable set, the daemons and the device
# agent write their TLS session keys in the NSS key log format Wireshark reads.
# mcimd has no code for it: GnuTLS (the daemons' server side) and libcurl on OpenSSL (the
# daemons' outbox, the mcim command) honour the variable themselves; the agent's client, on
# OpenSSL without libcurl, writes OpenSSL's key log lines itself (src/net/http_lite_conn.c). This
# test proves each side separately:
#   - the server side: `openssl s_client -keylogfile` (which ignores SSLKEYLOGFILE) talks to a
#     daemon; the secrets it logged must be in the daemons' file, written by GnuTLS;
#   - the daemons' client side: a connection between two daemons is logged twice (client
#     and server wrote the same line);
#   - the agent: started with its own file, it logs the connections of a procedure run by a
#     command without the variable; each of its lines is also in the daemons' file (the other
#     end of the same connection).
# openssl is needed (scripts/deps.sh installs it): missing, the test fails.
. "$(dirname "$0")/lib/common.bash"
need openssl

daemons="$tmp/daemons.keys"
agent="$tmp/agent.keys"
labels='^(CLIENT_HANDSHAKE_TRAFFIC_SECRET|SERVER_HANDSHAKE_TRAFFIC_SECRET|CLIENT_TRAFFIC_SECRET_0|SERVER_TRAFFIC_SECRET_0|EXPORTER_SECRET|CLIENT_RANDOM) [0-9a-f]{64} [0-9a-f]+$'

check "lab up with SSLKEYLOGFILE" env SSLKEYLOGFILE="$daemons" "$mcim" lab up --dir "$lab"
check "manufacture dev1 (without SSLKEYLOGFILE)" env -u SSLKEYLOGFILE "$mcim" lab device add dev1 --dir "$lab"
[ -s "$daemons" ] && ok "the daemons' key log exists" || bad "no $daemons"
if grep -Eq '^CLIENT_HANDSHAKE_TRAFFIC_SECRET [0-9a-f]{64} [0-9a-f]+$' "$daemons"; then
  ok "it has CLIENT_HANDSHAKE_TRAFFIC_SECRET lines (TLS 1.3)"
else
  bad "no CLIENT_HANDSHAKE_TRAFFIC_SECRET in $(head -c 300 "$daemons")"
fi
bad_lines=$(grep -Evc "$labels" "$daemons" || true)
[ "$bad_lines" -eq 0 ] && ok "every line is in the NSS key log format" || bad "$bad_lines lines in another format"

# The server side: GnuTLS in mcimd.
vno=$(role_url vno)
env -u SSLKEYLOGFILE openssl s_client -connect "${vno#https://}" -CAfile "$lab/pki/ca/operators-ca.crt" \
  -keylogfile "$tmp/sclient.keys" </dev/null >"$tmp/sclient.out" 2>&1 || true # the key log decides
line=$(grep '^CLIENT_HANDSHAKE_TRAFFIC_SECRET ' "$tmp/sclient.keys" 2>/dev/null | head -n1)
in_daemons() { grep -qxF "$1" "$daemons"; }
if [ -n "$line" ] && wait_until 5 in_daemons "$line"; then
  ok "the VNO (GnuTLS server) logged the secrets of a connection from openssl s_client"
else
  bad "the server side is not logged (s_client: '${line:0:60}' $(grep -m1 -i error "$tmp/sclient.out"))"
fi

# The agent (its own client) and the daemons' client side (libcurl/OpenSSL): a procedure
# makes the agent call every role and the SHO call the RO and the PVA.
# dev1's agent again, now with its own key log (the command that starts it passes it on)
check "dev1's agent restarted with SSLKEYLOGFILE" env SSLKEYLOGFILE="$agent" "$mcim" lab restart dev1 --dir "$lab"
before=$(wc -l <"$agent" 2>/dev/null || echo 0)
dbefore=$(wc -l <"$daemons")
check "run initial dev1 --sho sho-a (the command without SSLKEYLOGFILE)" \
  env -u SSLKEYLOGFILE "$mcim" run initial dev1 --sho sho-a --dir "$lab"
after=$(wc -l <"$agent" 2>/dev/null || echo 0)
[ "$after" -gt "$before" ] && ok "the agent logged $((after - before)) key lines during the procedure" ||
  bad "the agent's key log did not grow ($before -> $after)"
grep -q '^CLIENT_HANDSHAKE_TRAFFIC_SECRET ' "$agent" && ok "the agent's file has CLIENT_HANDSHAKE_TRAFFIC_SECRET lines" ||
  bad "no CLIENT_HANDSHAKE_TRAFFIC_SECRET in the agent's file"
missing_count() { grep '^CLIENT_HANDSHAKE_TRAFFIC_SECRET ' "$agent" | grep -cvxF -f "$daemons" || true; }
none_missing() { [ "$(missing_count)" -eq 0 ]; }
# (the servers write their lines as the handshakes end)
wait_until 5 none_missing && ok "each agent connection is in the daemons' file too (the server's end)" ||
  bad "$(missing_count) agent lines have no server-side line"
# During the run only the daemons write to their file with both ends of a connection (the
# agent writes to its own file, the command to none): a line written twice there is a
# connection from one daemon to another.
twice=$(tail -n +"$((dbefore + 1))" "$daemons" | grep '^CLIENT_HANDSHAKE_TRAFFIC_SECRET ' | sort | uniq -d | wc -l)
[ "$twice" -gt 0 ] && ok "$twice daemon-to-daemon connections logged by both ends (libcurl client side)" ||
  bad "no connection logged by both ends: the daemons' client side writes nothing"

finish
