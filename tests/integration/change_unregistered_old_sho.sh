#!/usr/bin/env bash
# An old SHO that never registered its DRF entry, then does not answer (change via the old SHO,
# steps 8-11). Step 15's registration is the SHO's own to send: an SHO that wants to keep its
# subscribers can leave it out, and the DRF then holds no entry of it for the device, only the
# install of its package that the device's TRE reported to the DPF. The agent is killed just
# after the TRE destroyed the old MCIM (step 8); sho-a's entry is taken out of the RO's
# registry (as if never sent) and sho-a stops. The agent comes back, cannot reach sho-a at
# step 9, and past `ack_deadline` hands the DPF the TRE-signed receipt (step 11). The DPF must
# take it: the install on its own record links sho-a to the device. Before the fix (review of
# 2026-12-06) the DPF answered REGISTRATION_PENDING ("sho-a's registration is on its way")
# until the procedure's deadline: the change failed after step 8, a veto by the old SHO, the
# device left with its PCID only.
. "$(dirname "$0")/lib/common.bash"
need sqlite3

old_sho_change_killed discard:after-tre "after the TRE's discard (step 8)"
# sho-a, hostile: as if it had never sent its registration
sql "$lab/ro/ro.db" "DELETE FROM drf WHERE device='la' AND sho='sho-a'" >/dev/null
db_is "$lab/ro/ro.db" "SELECT COUNT(*) FROM drf WHERE device='la' AND sho='sho-a'" 0 &&
  ok "the DRF holds no entry of sho-a for la" ||
  bad "DRF: $(sql "$lab/ro/ro.db" "SELECT sho, state FROM drf WHERE device='la'")"
db_is "$lab/ro/ro.db" "SELECT COUNT(*) FROM drf_orders WHERE device='la' AND sho='sho-a' AND state='installed'" 1 &&
  ok "the DPF's record of sho-a's install on la" ||
  bad "orders: $(sql "$lab/ro/ro.db" "SELECT sho, state FROM drf_orders WHERE device='la'")"
old_sho_change_completes "with no veto by an old SHO that never registered"
# sho-a back: the RO relays the receipt, sho-a terminates the old subscription
old_sho_back_terminates
finish
