#!/usr/bin/env bash
# Build (once) the Debian host image used by the lab and the Molecule scenarios.
# The image is a minimal Debian bookworm with systemd, sshd, rsync, xfsprogs and Python,
# tagged with a hash of this script so that a changed recipe builds a new image.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
recipe_hash=$(sha256sum "$0" | cut -c1-12)
image="localhost/chom-lab-host:${recipe_hash}"

if podman image exists "$image"; then
  echo "$image"
  exit 0
fi

packages=(systemd systemd-sysv dbus openssh-server rsync xfsprogs python3 python3-boto3
  iproute2 sudo procps ca-certificates util-linux mount curl prometheus-node-exporter)

# Use the same Debian mirror the build machine's apt is configured with.
mirror=$(grep -hoE '^URIs:\s*\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null \
  | awk '{print $2}' | grep -v security | head -n1 || true)
if [ -z "$mirror" ]; then
  mirror=$(grep -hoE '^deb\s+\S+' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n1 || true)
fi
[ -n "$mirror" ] || { echo "host-image: no Debian mirror found in apt sources" >&2; exit 1; }

work=$(mktemp -d /var/tmp/chom-lab-rootfs.XXXXXX)
trap 'umount -R "$work/rootfs/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
rootfs="$work/rootfs"

echo "host-image: debootstrap bookworm from the configured mirror" >&2
debootstrap --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" \
  bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

# Host configuration baked into the image.
chroot "$rootfs" /bin/sh -e <<'CHROOT'
systemctl mask getty@.service console-getty.service systemd-logind.service \
  systemd-udevd.service systemd-udev-trigger.service systemd-networkd-wait-online.service \
  systemd-resolved.service >/dev/null 2>&1 || true
systemctl enable ssh >/dev/null 2>&1
mkdir -p /root/.ssh /run/sshd
chmod 700 /root/.ssh
sed -i 's/^#\?PermitRootLogin.*/PermitRootLogin prohibit-password/' /etc/ssh/sshd_config
sed -i 's/^#\?UseDNS.*/UseDNS no/' /etc/ssh/sshd_config
rm -f /etc/ssh/ssh_host_*
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
CHROOT

# Host keys are generated at first boot, so every host gets its own.
cat >"$rootfs/etc/systemd/system/ssh-hostkeys.service" <<'UNIT'
[Unit]
Description=Generate SSH host keys
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/ssh-hostkeys.service \
  "$rootfs/etc/systemd/system/multi-user.target.wants/ssh-hostkeys.service"
: >"$rootfs/etc/machine-id"

tar -C "$rootfs" -c . | podman import \
  --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' - "$image" >/dev/null
echo "$image"
