# link (two hosts): each dom0 reaches its peer over the -netdev socket link
# (eth0, a port of the bridge xenbr0, which holds dom0's address), and both
# see the same shared disk: each writes a line into a block of its own
# (O_DIRECT) and reads the other's (O_DIRECT) until it is there.
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
[ -b "$E2E_SHARED" ] || e2e_fail "no shared disk $E2E_SHARED"
last=$(($(blockdev --getsize64 "$E2E_SHARED") / 4096 - 1))
case "$role" in A) mine=$last; theirs=$((last - 1)); other=B ;; *) mine=$((last - 1)); theirs=$last; other=A ;; esac
line="E2E-SHARED-FROM-$role $(e2e_now)"
printf '%-4095s\n' "$line" | dd of="$E2E_SHARED" bs=4096 seek=$mine count=1 iflag=fullblock oflag=direct conv=notrunc,fsync 2>/dev/null \
  || e2e_fail "cannot write block $mine of $E2E_SHARED"
i=0
until got=$(dd if="$E2E_SHARED" bs=4096 skip=$theirs count=1 iflag=direct 2>/dev/null | head -c 40 | tr -dc 'A-Z0-9. -') \
      && case "$got" in "E2E-SHARED-FROM-$other "*) true ;; *) false ;; esac; do
  i=$((i + 1))
  [ $i -ge 60 ] && e2e_fail "host $other's line never showed in block $theirs of the shared disk"
  sleep 0.5
done
e2e_report shared_disk_peer_line "$(echo $got)"
echo "E2E-INFO host $role reaches $peer and sees $other's writes on $E2E_SHARED"
