#!/usr/bin/env bash
# Run the Molecule scenarios, one after the other:
#
#   tests/molecule.sh [SCENARIO ...]     (default: every scenario under molecule/)
#
# `default` is one systemd storage host (rootful podman) with the roles. Every other scenario is
# named after the runbook it tests and runs it on up to three storage hosts (molecule-storage-1
# primary, -2 replica, -3 scale-out) on the podman network chom-molecule (10.213.48.0/24), against
# a control-plane PostgreSQL of its own on 127.0.0.1.
#
# Each scenario starts from blank disks (sparse files under /var/lib/chom-molecule, on loop
# devices seen as /dev/vdb by the hosts) and an empty control-plane database. The loop devices,
# files, network, database and hosts are removed at exit, whatever happened. Exits non-zero when
# any scenario failed, after running the others.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
state=/var/lib/chom-molecule
disk_size=${CHOM_MOLECULE_DISK_SIZE:-2G}
disk_count=3
network=chom-molecule
subnet=10.213.48.0/24
pg_port=${CHOM_MOLECULE_PG_PORT:-55532}
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)

say() { printf 'molecule.sh: %s\n' "$*" >&2; }

[ "$(id -u)" -eq 0 ] || { say "run as root (rootful podman, loop devices)"; exit 1; }
cd "$repo"
[ -x .venv/bin/molecule ] || { say "no .venv with molecule; run lab/setup-host.sh first"; exit 1; }
[ -n "$pg_bin" ] || { say "no PostgreSQL server binaries under /usr/lib/postgresql; run lab/setup-host.sh"; exit 1; }
# molecule must find ansible-config and friends on PATH.
# shellcheck disable=SC1091
source .venv/bin/activate

if [ $# -gt 0 ]; then
  scenarios=("$@")
else
  scenarios=(default)
  for f in molecule/*/molecule.yml; do
    s=$(basename "$(dirname "$f")")
    [ "$s" = default ] || scenarios+=("$s")
  done
fi
for s in "${scenarios[@]}"; do
  [ -f "molecule/$s/molecule.yml" ] || { say "no scenario '$s' (molecule/$s/molecule.yml)"; exit 2; }
done

# One run at a time: host names, network and database are fixed, and cleanup removes them.
exec 9>/run/lock/chom-molecule.lock
flock --nonblock 9 || { say "another tests/molecule.sh run is in progress"; exit 1; }

image=$(lab/host-image.sh)

loops=()
remove_hosts() {
  local name
  local pattern='^(chom-molecule-storage|molecule-storage-[0-9]+)$'
  for name in $(podman ps -a --format '{{.Names}}' | grep -E "$pattern" || true); do
    podman rm -f "$name" >/dev/null || say "could not remove container $name"
  done
}
detach_disks() {
  local dev
  for dev in "${loops[@]}"; do
    losetup -d "$dev" || say "could not detach $dev"
  done
  loops=()
  rm -f "$state"/disk-*.img
}
stop_database() {
  if [ -f "$state/pg/PG_VERSION" ]; then
    runuser -u postgres -- "$pg_bin/pg_ctl" -D "$state/pg" -m fast stop >/dev/null 2>&1 || true
  fi
}
cleanup() {
  # A host left over by an interrupted run would keep its loop device busy.
  remove_hosts
  detach_disks
  stop_database
  if podman network exists "$network" 2>/dev/null; then
    podman network rm "$network" >/dev/null || say "could not remove network $network"
  fi
  rm -rf "$state"
}
trap cleanup EXIT

# Blank disks for the next scenario: new sparse files on new loop devices.
fresh_disks() {
  local i img
  detach_disks
  for i in $(seq 1 "$disk_count"); do
    img="$state/disk-$i.img"
    (umask 077; truncate -s "$disk_size" "$img")
    loops+=("$(losetup --find --show "$img")")
    export "CHOM_MOLECULE_DEVICE_$i=${loops[-1]}"
  done
  export CHOM_MOLECULE_DEVICE=${loops[0]}
}

random_token() {  # $1 bytes of randomness, printed as hex
  python -c 'import secrets, sys; print(secrets.token_hex(int(sys.argv[1])))' "$1"
}

# The control plane of the runbook scenarios: a throwaway cluster on loopback, password
# authentication; the password travels in files and the environment, never on a command line.
start_database() {
  local pwfile
  install -d -o postgres -g postgres -m 0700 "$state/pg"
  pwfile=$(mktemp); chown postgres "$pwfile"
  printf '%s\n' "$CHOM_MOLECULE_DB_PASSWORD" >"$pwfile"
  runuser -u postgres -- "$pg_bin/initdb" -D "$state/pg" -U postgres --auth=scram-sha-256 \
    --pwfile="$pwfile" >/dev/null
  rm -f "$pwfile"
  runuser -u postgres -- "$pg_bin/pg_ctl" -D "$state/pg" -l "$state/pg/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -c port=$pg_port -c unix_socket_directories=$state/pg" start >/dev/null
  printf "CREATE ROLE chom_storage LOGIN PASSWORD '%s';\n" "$CHOM_MOLECULE_DB_PASSWORD" | psql_admin postgres
}
psql_admin() {  # $1 database; SQL on stdin
  PGPASSWORD=$CHOM_MOLECULE_DB_PASSWORD "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d "$1" \
    -q -v ON_ERROR_STOP=1
}
fresh_database() {
  printf '%s\n' 'SET client_min_messages = warning;' 'DROP DATABASE IF EXISTS chom WITH (FORCE);' \
    'CREATE DATABASE chom OWNER chom_storage;' | psql_admin postgres
}

remove_hosts
rm -rf "$state"
mkdir -p "$state"
# Traversable, not listable: the database cluster inside belongs to the postgres user.
chmod 0711 "$state"
if ! podman network exists "$network"; then
  podman network create --subnet "$subnet" "$network" >/dev/null
fi

CHOM_MOLECULE_STATE=$state
CHOM_MOLECULE_IMAGE=$image
CHOM_MOLECULE_ADMIN_ACCESS_KEY="moladmin$(random_token 6)"
# The admin secret deliberately holds a space, both quotes, $ and !.
CHOM_MOLECULE_ADMIN_SECRET_KEY="sp ace \"dq\" 'sq' \$dollar !bang $(random_token 8)"
CHOM_MOLECULE_APP_ACCESS_KEY="molapp$(random_token 6)"
CHOM_MOLECULE_APP_SECRET_KEY=$(random_token 16)
CHOM_MOLECULE_REPLICATION_ACCESS_KEY="molrepl$(random_token 6)"
CHOM_MOLECULE_REPLICATION_SECRET_KEY=$(random_token 16)
CHOM_MOLECULE_DB_PASSWORD=$(random_token 16)
CHOM_MOLECULE_DB_PORT=$pg_port
export CHOM_MOLECULE_STATE CHOM_MOLECULE_IMAGE \
  CHOM_MOLECULE_ADMIN_ACCESS_KEY CHOM_MOLECULE_ADMIN_SECRET_KEY \
  CHOM_MOLECULE_APP_ACCESS_KEY CHOM_MOLECULE_APP_SECRET_KEY \
  CHOM_MOLECULE_REPLICATION_ACCESS_KEY CHOM_MOLECULE_REPLICATION_SECRET_KEY \
  CHOM_MOLECULE_DB_PASSWORD CHOM_MOLECULE_DB_PORT
start_database
say "image $image, control plane on 127.0.0.1:$pg_port"

failed=()
for s in "${scenarios[@]}"; do
  fresh_disks
  fresh_database
  rm -rf "$state/prometheus" "$state/app"
  say "scenario $s: disks ${loops[*]}"
  start=$SECONDS
  set +e
  molecule test --scenario-name "$s" 2>&1 | tee "$state/$s.log"
  rc=${PIPESTATUS[0]}
  set -e
  # No credential of the run may appear in what Molecule and Ansible printed.
  for secret in "$CHOM_MOLECULE_ADMIN_SECRET_KEY" "$CHOM_MOLECULE_APP_SECRET_KEY" \
      "$CHOM_MOLECULE_REPLICATION_SECRET_KEY" "$CHOM_MOLECULE_DB_PASSWORD"; do
    if grep -qF -- "$secret" "$state/$s.log"; then
      say "scenario $s printed one of the run's secrets"
      rc=1
    fi
  done
  say "scenario $s finished with status $rc after $((SECONDS - start)) s"
  [ "$rc" -eq 0 ] || failed+=("$s")
  remove_hosts
done

if [ ${#failed[@]} -gt 0 ]; then
  say "FAILED: ${failed[*]} (of ${scenarios[*]})"
  exit 1
fi
say "passed: ${scenarios[*]}"
