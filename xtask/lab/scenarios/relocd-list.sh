# relocd-list: `relocd serve --backend xen` in dom0; with the test guest
# running, `relocd list --json` must show what `xl list` shows: the same
# domains, ids, names (from xenstore), memory in MiB and vCPUs.
. /e2e/lib.sh
SOCK=/tmp/r.sock
rm -rf /tmp/rs "$SOCK"
relocd serve --backend xen --control "$SOCK" --state-dir /tmp/rs \
  > /tmp/relocd-serve.log 2>&1 &
RELOCD_PID=$!
stop_relocd() { kill "$RELOCD_PID" 2>/dev/null; wait "$RELOCD_PID" 2>/dev/null; }
trap stop_relocd EXIT
i=0
until [ -S "$SOCK" ]; do
  i=$((i + 1))
  if [ $i -ge 100 ] || ! kill -0 "$RELOCD_PID" 2>/dev/null; then
    cat /tmp/relocd-serve.log
    e2e_fail "relocd serve --backend xen did not come up"
  fi
  sleep 0.1
done
e2e_report serve_up_s "$(awk -v i=$i 'BEGIN { printf "%.1f", i / 10 }')"
e2e_guest_start

compare_lists() { # compare_lists LABEL: relocd list --json against xl list
  e2e_step "relocd-list-$1" sh -c "relocd --control $SOCK list --json > /tmp/relocd-list.json" \
    || e2e_fail "relocd list failed"
  xl list > /tmp/xl-list.txt || e2e_fail "xl list failed"
  cat /tmp/xl-list.txt
  cat /tmp/relocd-list.json
  # one line a domain: id name mem_mib vcpus state
  tr '{' '\n' < /tmp/relocd-list.json | grep '"id"' | tr -d '"}] ' | awk -F, '
    { id = ""; name = ""; mem = ""; vcpus = ""; state = ""
      for (k = 1; k <= NF; k++) {
        c = index($k, ":"); key = substr($k, 1, c - 1); v = substr($k, c + 1)
        if (key == "id") id = v
        else if (key == "name") name = v
        else if (key == "memory_bytes") mem = int(v / 1048576)
        else if (key == "vcpus") vcpus = v
        else if (key == "state") state = v
      }
      print id, name, mem, vcpus, state }' | sort -n > /tmp/relocd-list.txt
  # xl list: Name ID Mem VCPUs State Time; the state letters as relocd names them
  awk 'NR > 1 { s = "running"
                if ($5 ~ /p/) s = "paused"
                if ($5 ~ /s/) s = "shutdown"
                if ($5 ~ /c/) s = "crashed"
                if ($5 ~ /d/) s = "dying"
                print $2, $1, $3, $4, s }' /tmp/xl-list.txt | sort -n > /tmp/xl-list-cols.txt
  echo "relocd:"; cat /tmp/relocd-list.txt
  echo "xl:"; cat /tmp/xl-list-cols.txt
  e2e_collect /tmp/relocd-list.json "relocd-list-$1.json"
  e2e_collect /tmp/xl-list.txt "xl-list-$1.txt"
  [ -s /tmp/relocd-list.txt ] || e2e_fail "relocd list shows no domain"
  grep -q " $E2E_GUEST " /tmp/relocd-list.txt || e2e_fail "relocd list does not show $E2E_GUEST"
  grep -q "^0 Domain-0 " /tmp/relocd-list.txt || e2e_fail "relocd list does not show Domain-0 as id 0"
  cmp -s /tmp/relocd-list.txt /tmp/xl-list-cols.txt \
    || { diff /tmp/xl-list-cols.txt /tmp/relocd-list.txt; e2e_fail "relocd list differs from xl list ($1)"; }
}

compare_lists running
e2e_report domains "$(wc -l < /tmp/relocd-list.txt)"
e2e_report guest_row "$(grep " $E2E_GUEST " /tmp/relocd-list.txt | tr ' ' _)"
xl pause $E2E_GUEST || e2e_fail "xl pause failed"
compare_lists paused
grep -q " $E2E_GUEST .* paused$" /tmp/relocd-list.txt || e2e_fail "relocd list does not show the guest paused"
xl unpause $E2E_GUEST || e2e_fail "xl unpause failed"

e2e_step destroy xl destroy $E2E_GUEST || e2e_fail "xl destroy failed"
relocd --control "$SOCK" list --json | grep -q "\"$E2E_GUEST\"" \
  && e2e_fail "relocd list still shows $E2E_GUEST after xl destroy"
stop_relocd
trap - EXIT
e2e_collect /tmp/relocd-serve.log relocd-serve.log
echo "E2E-INFO relocd-list OK: relocd list matches xl list"
