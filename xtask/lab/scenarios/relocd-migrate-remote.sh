# relocd-migrate-remote (two hosts): relocd serves on both (B admits A by
# its hosts-allow); A runs the test guest, which dirties memory, and moves
# it with `relocd migrate --live --compress` to B. On B the counter goes on from where
# it was on A, memory intact; A no longer has the guest; relocd list and xl
# list agree on both hosts. Figures: relocd's (rounds, pages, bytes, total,
# downtime) and the guest's own pause: the gap between its last console
# line on A and its first on B, both timed on A's clock (lib-migrate.sh).
. /e2e/lib.sh
. /e2e/lib-migrate.sh
e2e_mig_start e2e_mig_end

e2e_mig_live_move --compress
echo "E2E-INFO relocd-migrate-remote: host $E2E_MIG_ROLE OK"
