# Helpers of the driver-domain scenarios (dom0 side; sourced after
# /e2e/lib.sh). The relocd domain is created by dom0's init on FLASK boots
# (e2e.driver_domain=1), first, so that it is domain 1, the id xenstored
# was started with (--priv-domid 1); see docs/driver-domain.md.
# (its console log, guest-dd-relocd.log, sorts before the test guest's:
# lib-migrate.sh's timeline follows the last guest-*.log in glob order)
E2E_DD_NAME=dd-relocd
E2E_DD_CFG=/e2e/dd/relocd-domain.cfg
E2E_DD_LOG=$E2E_CONSOLE_DIR/guest-$E2E_DD_NAME.log
E2E_DD_DOMID=1
E2E_DD_PORT=7000

# e2e_dd_role_ip ROLE: the relocd domain's address on the bridged link
e2e_dd_role_ip() { case "$1" in B) echo 169.254.0.12 ;; *) echo 169.254.0.11 ;; esac; }

e2e_dd_bridge() { # the bridge xenbr0, holding eth0 (the link) and dom0's address
  ip link show xenbr0 >/dev/null 2>&1 && return 0
  for _m in net/llc/llc net/802/stp net/bridge/bridge drivers/net/xen-netback/xen-netback; do
    [ -d "/sys/module/$(basename $_m | tr - _)" ] && continue
    insmod "/lib/modules/$(uname -r)/kernel/$_m.ko" || { echo "E2E-WARN insmod $_m failed"; return 1; }
  done
  brctl addbr xenbr0 || return 1
  brctl stp xenbr0 off
  echo 0 > /sys/class/net/xenbr0/bridge/forward_delay
  _addr=$(e2e_arg e2e.ip)
  if ip link show eth0 >/dev/null 2>&1; then
    [ -n "$_addr" ] && ip addr del "$_addr" dev eth0
    brctl addif xenbr0 eth0 || return 1
  fi
  ip addr add "${_addr:-169.254.0.1/16}" dev xenbr0 || return 1
  ip link set xenbr0 up
}

e2e_dd_boot() { # dom0's init: the bridge, then the relocd domain (not waited for)
  _t=$(e2e_now)
  e2e_dd_bridge || echo "E2E-WARN the bridge xenbr0 could not be made"
  _role=$(e2e_arg e2e.role)
  _ip=$(e2e_dd_role_ip "$_role")
  _n=1; [ "$_role" = B ] && _n=2
  # each relocd domain admits the other one (and no dom0)
  xl create "$E2E_DD_CFG" \
    "extra=\"console=hvc0 quiet loglevel=3 dd.ip=$_ip/16 dd.allow=169.254.0.1[12]\"" \
    "vif=[\"bridge=xenbr0,script=/e2e/dd/vif-dd,mac=00:16:3e:dd:00:0$_n\"]" \
    > /run/e2e-dd-create.log 2>&1 || echo "E2E-WARN xl create of the relocd domain failed: $(tail -3 /run/e2e-dd-create.log | tr '\n' ' ')"
  echo "$_t $(e2e_now)" > /run/e2e-dd-created
}

e2e_dd_ip() { e2e_dd_role_ip "$(e2e_arg e2e.role)"; }

e2e_dd_wait() { # the relocd domain is domain 1, labelled relocd_t, and serves
  _id=$(xl domid $E2E_DD_NAME 2>/dev/null)
  [ "$_id" = "$E2E_DD_DOMID" ] || e2e_fail "the relocd domain is domain '$_id', not $E2E_DD_DOMID (xenstored's --priv-domid): $(cat /run/e2e-dd-create.log 2>/dev/null | tail -3 | tr '\n' ' ')"
  _i=0
  until grep -q DD-READY "$E2E_DD_LOG" 2>/dev/null; do
    _i=$((_i + 1))
    [ $_i -ge 240 ] && { tail -20 "$E2E_DD_LOG"; e2e_fail "the relocd domain did not come up"; }
    sleep 0.5
  done
  grep -q DD-WARN "$E2E_DD_LOG" && { grep DD-WARN "$E2E_DD_LOG"; echo "E2E-WARN the relocd domain warned"; }
  # jumbo frames as on the link: netback takes MTU 9000 once the frontend
  # has connected (scatter-gather); else the relocd domain goes back to 1500
  if ! ip link set vif$E2E_DD_DOMID.0 mtu 9000 2>/dev/null; then
    echo "E2E-WARN vif$E2E_DD_DOMID.0 refuses MTU 9000; the relocd domain uses 1500"
    e2e_dd 'ip link set eth0 mtu 1500' >/dev/null
  fi
  ip link set xenbr0 mtu 9000 2>/dev/null
  xl list -Z | grep "^$E2E_DD_NAME " | grep -q relocd_t || e2e_fail "the relocd domain is not labelled relocd_t: $(xl list -Z | grep "^$E2E_DD_NAME ")"
}

e2e_dd() { # e2e_dd CMD...: runs CMD in the relocd domain; its output; its rc
  echo "$*" | nc "$(e2e_dd_ip)" $E2E_DD_PORT > /tmp/dd-out.txt 2>&1
  _rc=$(sed -n 's/^E2E-DD-RC \([0-9]*\).*/\1/p' /tmp/dd-out.txt | tail -1)
  grep -v '^E2E-DD-RC ' /tmp/dd-out.txt
  [ -n "$_rc" ] || { echo "(no answer from the relocd domain)"; return 255; }
  return "$_rc"
}

e2e_dd_report_figures() { # the relocd domain's size, boot, and relocd's RSS in it
  set -- $(cat /run/e2e-dd-created 2>/dev/null)
  [ -n "$2" ] && e2e_report dd_xl_create_s "$(e2e_secs "$1" "$2")"
  _up=$(sed -n 's/.*DD-READY uptime=\([0-9.]*\).*/\1/p' "$E2E_DD_LOG" | head -1)
  e2e_report dd_kernel_uptime_at_ready_s "$_up"
  e2e_report dd_memory_vcpus "$(xl list $E2E_DD_NAME | awk 'NR==2 {print $3 " MiB, " $4 " vCPU"}')"
  e2e_report dd_relocd_rss "$(e2e_dd 'grep -E "VmRSS|VmHWM" /proc/$(pidof relocd)/status' | tr -s ' \t\n' ' ')"
  e2e_report dd_memfree "$(e2e_dd 'grep -E "MemTotal|MemAvailable" /proc/meminfo' | tr -s ' \t\n' ' ')"
}

e2e_dd_no_dom0_relocd() { # no relocd process in dom0
  pidof relocd >/dev/null && e2e_fail "a relocd runs in dom0 (pid $(pidof relocd))"
  return 0
}
