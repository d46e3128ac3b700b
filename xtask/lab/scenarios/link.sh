# link (two hosts): each dom0 reaches its peer over the -netdev socket link.
. /e2e/lib.sh
role=$(e2e_arg e2e.role)
peer=$(e2e_arg e2e.peer)
[ -n "$peer" ] || e2e_fail "no e2e.peer on the kernel command line (run with two hosts)"
ip addr show dev eth0 || e2e_fail "no eth0"
# eth0 is a port of the bridge xenbr0, which holds dom0's address
[ -e /sys/class/net/xenbr0/brif/eth0 ] || e2e_fail "eth0 is not a port of xenbr0"
ip addr show dev xenbr0 | grep -q "inet $(e2e_arg e2e.ip)" || e2e_fail "xenbr0 does not hold $(e2e_arg e2e.ip)"
i=0
until ping -c 1 -W 1 "$peer" >/dev/null 2>&1; do
  i=$((i + 1))
  [ $i -ge 60 ] && e2e_fail "host $role cannot reach $peer"
  sleep 1
done
e2e_report peer_reachable_after_s "$i"
rtt=$(ping -c 5 -i 0.2 "$peer" | awk -F/ '/min\/avg/ {print $4}')
e2e_report rtt_avg_ms "$rtt"
echo "E2E-INFO host $role reaches $peer"
