#!/usr/bin/env bash
# Run the Molecule scenario molecule/default: one systemd storage host (rootful podman) with a
# loop-backed disk of its own as /dev/vdb. The disk is a sparse file under /var/lib/chom-molecule,
# separate from the lab's disks; the loop device and the file are removed at exit, whatever
# happened. Exits with Molecule's status. Arguments are passed on to `molecule test`.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
state=/var/lib/chom-molecule
disk_size=${CHOM_MOLECULE_DISK_SIZE:-2G}
instance=chom-molecule-storage

say() { printf 'molecule.sh: %s\n' "$*" >&2; }

[ "$(id -u)" -eq 0 ] || { say "run as root (rootful podman, loop devices)"; exit 1; }
cd "$repo"
[ -x .venv/bin/molecule ] || { say "no .venv with molecule; run lab/setup-host.sh first"; exit 1; }
# molecule must find ansible-config and friends on PATH.
# shellcheck disable=SC1091
source .venv/bin/activate

# One run at a time: the host's name is fixed, and cleanup removes it.
exec 9>/run/lock/chom-molecule.lock
flock --nonblock 9 || { say "another tests/molecule.sh run is in progress"; exit 1; }

image=$(lab/host-image.sh)

disk=""
loop_dev=""
cleanup() {
  # A host left over by an interrupted run would keep the loop device busy.
  if podman container exists "$instance" 2>/dev/null; then
    podman rm -f "$instance" >/dev/null || say "could not remove container $instance"
  fi
  if [ -n "$loop_dev" ]; then
    losetup -d "$loop_dev" || say "could not detach $loop_dev"
  fi
  if [ -n "$disk" ]; then
    rm -f "$disk"
  fi
  rmdir "$state" 2>/dev/null || true
}
trap cleanup EXIT

mkdir -p "$state"
chmod 0700 "$state"
disk=$(mktemp "$state/disk.XXXXXX")
truncate -s "$disk_size" "$disk"
loop_dev=$(losetup --find --show "$disk")
say "disk $disk on $loop_dev, image $image"

random_token() {  # $1 bytes of randomness, printed as hex
  python -c 'import secrets, sys; print(secrets.token_hex(int(sys.argv[1])))' "$1"
}

CHOM_MOLECULE_INSTANCE=$instance
CHOM_MOLECULE_IMAGE=$image
CHOM_MOLECULE_DEVICE=$loop_dev
CHOM_MOLECULE_ADMIN_ACCESS_KEY="moladmin$(random_token 6)"
# The admin secret deliberately holds a space, both quotes, $ and !.
CHOM_MOLECULE_ADMIN_SECRET_KEY="sp ace \"dq\" 'sq' \$dollar !bang $(random_token 8)"
CHOM_MOLECULE_APP_ACCESS_KEY="molapp$(random_token 6)"
CHOM_MOLECULE_APP_SECRET_KEY=$(random_token 16)
export CHOM_MOLECULE_INSTANCE CHOM_MOLECULE_IMAGE CHOM_MOLECULE_DEVICE \
  CHOM_MOLECULE_ADMIN_ACCESS_KEY CHOM_MOLECULE_ADMIN_SECRET_KEY \
  CHOM_MOLECULE_APP_ACCESS_KEY CHOM_MOLECULE_APP_SECRET_KEY

start=$SECONDS
rc=0
molecule test --scenario-name default "$@" || rc=$?
say "molecule test finished with status $rc after $((SECONDS - start)) s"
exit "$rc"
