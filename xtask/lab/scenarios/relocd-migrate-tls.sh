# relocd-migrate-tls (two hosts): the live migration of relocd-migrate-remote
# over TLS, both hosts authenticated by certificates the lab build made
# (/e2e/tls: a CA, and for each dom0 a certificate for its link address and
# the name hostX.e2e). Both relocd serve with only the TLS listener
# (xend-relocation-ssl-server, port 8003) and TLS as the default
# (xend-relocation-ssl); B's hosts-allow admits A by its certificate's name
# alone. A moves the guest with `relocd migrate --live --ssl`; on B the
# counter goes on, memory intact, and B's log says A was admitted by its
# certificate's name.
. /e2e/lib.sh
. /e2e/lib-migrate.sh
[ -n "$E2E_MIG_PEER" ] || e2e_fail "no e2e.peer on the kernel command line (run with two hosts)"
rm -f /var/lib/xen/save/* "$E2E_MIG_LOG"
rm -rf "$E2E_MIG_STATE"
trap e2e_mig_end EXIT
xl destroy $E2E_GUEST >/dev/null 2>&1
rm -f "$E2E_CONSOLE_DIR"/guest-*
case "$E2E_MIG_ROLE" in
A) me=a allow='^hostb\\.e2e$' ;;
B) me=b allow='^hosta\\.e2e$' ;;
*) e2e_fail "unknown role '$E2E_MIG_ROLE'" ;;
esac
for f in ca.pem $me.key $me.crt; do
  [ -s /e2e/tls/$f ] || e2e_fail "the lab build made no /e2e/tls/$f"
done
cat > "$E2E_MIG_CONFIG" <<EOF
(xend-relocation-server no)
(xend-relocation-ssl-server yes)
(xend-relocation-ssl-port 8003)
(xend-relocation-address '')
(xend-relocation-hosts-allow '$allow')
(xend-relocation-server-ssl-key-file /e2e/tls/$me.key)
(xend-relocation-server-ssl-cert-file /e2e/tls/$me.crt)
(relocd-relocation-ssl-ca-file /e2e/tls/ca.pem)
(xend-relocation-ssl yes)
EOF
# TLS draws on the kernel's random pool, which a dom0 under QEMU without a
# hardware RNG fills only some time after boot (getrandom blocks until
# then, past the handshake timeout): wait for it, bounded, before serving.
t0=$(e2e_now)
timeout 150 dd if=/dev/random of=/dev/null bs=1 count=1 2>/dev/null \
  || e2e_fail "the kernel's random pool was not ready within 150 s"
e2e_report random_pool_wait_s "$(e2e_secs "$t0" "$(e2e_now)")"
e2e_mig_serve
e2e_mig_wait_link

case "$E2E_MIG_ROLE" in
A)
  e2e_mig_guest96
  e2e_guest_start
  e2e_mig_timeline_listen
  e2e_mig_sync ready
  e2e_mig_timeline_relay
  e2e_mig_lists_agree before
  sleep 3
  domid=$(xl domid $E2E_GUEST)
  tx0=$(e2e_mig_tx)
  e2e_step relocd-migrate sh -c "relocd --control $E2E_MIG_SOCK migrate --live --ssl --json $E2E_GUEST $E2E_MIG_PEER > /tmp/migrate.json 2> /tmp/migrate.err"
  rc=$?
  e2e_mig_report_tx migrate "$tx0"
  cat /tmp/migrate.json /tmp/migrate.err
  e2e_collect /tmp/migrate.json migrate.json
  if [ $rc != 0 ]; then
    e2e_mig_tell "failed" 20
    [ "$(xl domid $E2E_GUEST 2>/dev/null)" = "$domid" ] || e2e_fail "after the failed migration the guest is not domain $domid"
    e2e_mig_counts_on failed-migration
    e2e_fail "relocd migrate --live --ssl to B failed (rc $rc): $(cat /tmp/migrate.json /tmp/migrate.err | tail -2 | tr '\n' ' ')"
  fi
  e2e_mig_report_json migrate /tmp/migrate.json
  sleep 1   # let xenconsoled drain the source domain's last lines
  before=$(e2e_last_counter "$E2E_GUEST_LOG")
  e2e_report counter_at_suspend "$before"
  e2e_mig_tell "$before" || e2e_fail "cannot tell B the counter"
  xl list | grep -q "^$E2E_GUEST " && e2e_fail "the guest is still on A after the migration"
  xl list | awk '$2 == "'"$domid"'"' | grep -q . && e2e_fail "domain $domid is still on A"
  e2e_mig_lists_agree after
  e2e_mig_gap migrate "$before" || e2e_fail "no guest-measured gap"
  e2e_mig_sync checked
  ;;
B)
  e2e_mig_timeline_listen
  e2e_mig_sync ready
  e2e_mig_timeline_relay
  before=$(e2e_mig_hear 400)
  case "$before" in
    ''|*[!0-9]*)
      e2e_mig_no_guest "the failed migration" 30
      e2e_fail "A's migration failed ('$before'); B has no leftover domain"
      ;;
  esac
  xl list
  xl list | grep -q "^$E2E_GUEST " || e2e_fail "no $E2E_GUEST on B after the migration"
  log=$(ls -t "$E2E_CONSOLE_DIR"/guest-*.log 2>/dev/null | head -1)
  [ -n "$log" ] || e2e_fail "no guest console log on B"
  e2e_report target_console_log "${log##*/}"
  e2e_guest_goes_on migrate "$before" "$log" 1
  e2e_mig_lists_agree after
  grep -q "TLS peer admitted by its certificate's name hosta.e2e" "$E2E_MIG_LOG" \
    || e2e_fail "B's log does not say A was admitted by its certificate's name"
  e2e_report admitted "$(grep "TLS peer admitted" "$E2E_MIG_LOG" | tail -1)"
  e2e_mig_sync checked
  e2e_step destroy xl destroy $E2E_GUEST || e2e_fail "xl destroy on B failed"
  ;;
esac
echo "E2E-INFO relocd-migrate-tls: host $E2E_MIG_ROLE OK"
