# Sourced by scripts/test: the Debian packages the tests drive for real. Installed when missing
# and this is Debian run as root; otherwise the exact command is printed and the run stops.
#   prometheus: promtool, which checks and tests the exported alert rules.
#   chromium: the headless browser the dashboard's test drives.
#   systemd: systemd-socket-activate, which hands the engine its socket as systemd does, and
#     systemd-analyze, which checks the shipped units.
#   nginx: the balancer in front of three replicas in the scale-out tests.
#   openssl: a throwaway certificate for checking the shipped nginx config whole.

need_package() {
  local command=$1 package=$2
  if command -v "$command" >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing $package (for $command)"
    # The package lists may be missing on a fresh machine; update once, quietly.
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$package" >/dev/null 2>&1; then
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$package" >/dev/null
    fi
  fi
  if ! command -v "$command" >/dev/null 2>&1; then
    echo "scripts/test: $command is missing; install it with: sudo apt-get install -y $package" >&2
    exit 1
  fi
}

need_package promtool prometheus
need_package chromium chromium
need_package systemd-socket-activate systemd
need_package nginx nginx
need_package openssl openssl
