# relocd-runs: the relocd binary built by the harness runs in dom0.
. /e2e/lib.sh
command -v relocd >/dev/null || e2e_fail "relocd is not in dom0's PATH"
e2e_step version relocd --version || e2e_fail "relocd --version failed"
e2e_report relocd_version "$(relocd -V | tr ' ' _)"
if relocd check-host --help >/dev/null 2>&1; then
  e2e_step check-host relocd check-host --hosts-allow '^localhost$' \
    --ip 127.0.0.1 --name localhost || e2e_fail "relocd check-host refused localhost"
  # and it can say no
  relocd check-host --hosts-allow '^otherhost$' --ip 127.0.0.1 --name localhost \
    && e2e_fail "relocd check-host admitted a peer no pattern matches"
else
  echo "E2E-INFO this relocd has no check-host subcommand; running --help"
  e2e_step help relocd --help || e2e_fail "relocd --help failed"
fi
echo "E2E-INFO relocd-runs OK"
