# relocd-migrate-remote (two hosts): relocd serves on both (B admits A by
# its hosts-allow); A runs the test guest, which dirties memory, and moves
# it with `relocd migrate --live --compress` to B. On B the counter goes on from where
# it was on A, memory intact; A no longer has the guest; relocd list and xl
# list agree on both hosts. Figures: relocd's (rounds, pages, bytes, total,
# downtime) and the guest's own pause: the gap between its last console
# line on A and its first on B, both timed on A's clock (lib-migrate.sh).
. /e2e/lib.sh
. /e2e/lib-migrate.sh
[ -n "$E2E_MIG_PEER" ] || e2e_fail "no e2e.peer on the kernel command line (run with two hosts)"
rm -f /var/lib/xen/save/* "$E2E_MIG_LOG"
rm -rf "$E2E_MIG_STATE"
trap e2e_mig_end EXIT
xl destroy $E2E_GUEST >/dev/null 2>&1
rm -f "$E2E_CONSOLE_DIR"/guest-*
case "$E2E_MIG_ROLE" in
A) e2e_mig_config '^169\\.254\\.0\\.2$' ;;
B) e2e_mig_config '^169\\.254\\.0\\.1$' ;;
*) e2e_fail "unknown role '$E2E_MIG_ROLE'" ;;
esac
e2e_mig_serve
e2e_mig_wait_link

e2e_mig_live_move --compress
echo "E2E-INFO relocd-migrate-remote: host $E2E_MIG_ROLE OK"
