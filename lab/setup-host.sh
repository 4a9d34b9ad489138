#!/usr/bin/env bash
# Prepare this machine to run the lab and the tests: Debian packages, podman settings,
# and the project's Python virtual environment. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "setup-host: run as root (podman hosts, loop devices)" >&2; exit 1; }

apt_packages=(podman runc debootstrap postgresql xfsprogs rsync openssh-client
  iproute2 iptables netavark aardvark-dns make prometheus prometheus-node-exporter lvm2 fdisk)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-host: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian packages start services of their own; the lab runs its own instances.
for svc in postgresql prometheus prometheus-node-exporter; do
  systemctl disable --now "$svc" >/dev/null 2>&1 || true
done

# Podman on this kind of VM needs runc (crun fails on the hybrid cgroup layout)
# and rlimits below the VM's own limits.
conf=/etc/containers/containers.conf
if ! grep -q 'chom-lab' "$conf" 2>/dev/null; then
  mkdir -p /etc/containers
  cat >>"$conf" <<'CONF'
# chom-lab: settings required for systemd test hosts on this machine
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=16384:16384"]

[engine]
runtime = "runc"
CONF
fi

# Python environment with every pinned dependency.
python=${CHOM_PYTHON:-}
if [ -z "$python" ]; then
  for c in /root/.pyenv/versions/3.12.*/bin/python3.12 python3.12 python3.13 python3; do
    if "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
      python=$c; break
    fi
  done
fi
[ -n "$python" ] || { echo "setup-host: Python 3.12+ is required" >&2; exit 1; }
if [ ! -x .venv/bin/python ] || ! cmp -s requirements.txt .venv/.requirements.txt; then
  "$python" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c 'import ansible, psycopg, boto3' || { echo "setup-host: pip install failed" >&2; exit 1; }
  cp requirements.txt .venv/.requirements.txt
fi
