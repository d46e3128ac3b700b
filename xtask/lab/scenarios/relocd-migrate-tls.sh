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

# B: its log says A was admitted by the name in A's certificate.
tls_admitted_by_name() {
  grep -q "TLS peer admitted by its certificate's name hosta.e2e" "$E2E_MIG_LOG" \
    || e2e_fail "B's log does not say A was admitted by its certificate's name"
  e2e_report admitted "$(grep "TLS peer admitted" "$E2E_MIG_LOG" | tail -1)"
}
e2e_mig_live_move --ssl tls_admitted_by_name
echo "E2E-INFO relocd-migrate-tls: host $E2E_MIG_ROLE OK"
