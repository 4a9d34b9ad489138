#!/usr/bin/env bash
# The local lab: storage hosts as systemd containers (rootful podman), each with its own
# IP address and its own loop-backed disk at /dev/vdb, a customer VPS (vps-1, same image, no
# data disk) holding a few sites' files, plus a PostgreSQL control-plane database on loopback.
#
#   lab/lab.sh up      create or converge the lab, write its inventory (idempotent); HOSTS=N (default
#                      2) storage hosts: storage-1 primary, storage-2 replica, storage-3.. scale-out
#                      hosts in group storage_pool. A running lab gets the missing hosts added.
#   lab/lab.sh down    remove the lab's containers, loop devices, disks and database
#   lab/lab.sh status  show what is running
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
state=${CHOM_LAB_STATE:-/var/lib/chom-lab}
hosts_count=${HOSTS:-2}
network=chom-lab
subnet_prefix=${CHOM_LAB_SUBNET_PREFIX:-10.213.47}
disk_size=${CHOM_LAB_DISK_SIZE:-2G}
pg_port=${CHOM_LAB_PG_PORT:-55432}
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
label=chom-lab

say() { printf 'lab: %s\n' "$*" >&2; }

case "$state" in
  */chom-lab*) ;;
  *) say "CHOM_LAB_STATE must be a directory whose name starts with chom-lab, got '$state'"; exit 2 ;;
esac

host_name() { echo "storage-$1"; }
host_ip() { echo "${subnet_prefix}.$((10 + $1))"; }
vps_name=vps-1
vps_ip="${subnet_prefix}.101"
# Sites the lab's VPS hosts: site ID and document root. The IDs are those the demo registers in
# the control plane, so the demo's placement gives each a storage host.
vps_sites=(site-001:/var/www/site-001 site-002:/var/www/site-002)

attach_disk() {  # $1 host name; prints the loop device
  local img="$state/disks/$1.img" dev
  mkdir -p "$state/disks"
  [ -f "$img" ] || truncate -s "$disk_size" "$img"
  dev=$(losetup --associated "$img" | cut -d: -f1 | head -n1)
  [ -n "$dev" ] || dev=$(losetup --find --show "$img")
  echo "$dev"
}

start_host() {  # $1 index
  local name ip dev current
  name=$(host_name "$1"); ip=$(host_ip "$1")
  dev=$(attach_disk "$name")
  if podman container exists "$name"; then
    current=$(podman inspect "$name" --format '{{index .Config.Labels "chom-lab.disk"}}')
    if [ "$current" != "$dev" ] || [ "$(podman inspect "$name" --format '{{.ImageName}}')" != "$image" ]; then
      say "$name: disk or image changed, recreating the container"
      podman rm -f "$name" >/dev/null
    fi
  fi
  if ! podman container exists "$name"; then
    podman run -d --name "$name" --hostname "$name" --label "$label=host" --label "chom-lab.disk=$dev" \
      --network "$network" --ip "$ip" --no-hosts \
      --cap-add SYS_ADMIN --device "$dev:/dev/vdb" \
      "$image" >/dev/null
    say "$name: started at $ip with $dev as /dev/vdb"
  elif [ "$(podman inspect "$name" --format '{{.State.Running}}')" != true ]; then
    podman start "$name" >/dev/null
    say "$name: restarted"
  elif ! podman exec "$name" true >/dev/null 2>&1; then
    # Recorded as running but not answering (its processes were killed): start it again.
    podman stop -t 5 "$name" >/dev/null 2>&1 || true
    podman start "$name" >/dev/null
    say "$name: was not answering, restarted"
  fi
}

# The customer VPS: the same image, no data disk; its site files live on its root filesystem.
start_vps() {
  if podman container exists "$vps_name" \
      && [ "$(podman inspect "$vps_name" --format '{{.ImageName}}')" != "$image" ]; then
    say "$vps_name: image changed, recreating the container"
    podman rm -f "$vps_name" >/dev/null
  fi
  if ! podman container exists "$vps_name"; then
    podman run -d --name "$vps_name" --hostname "$vps_name" --label "$label=host" --label "$label.role=vps" \
      --network "$network" --ip "$vps_ip" --no-hosts "$image" >/dev/null
    say "$vps_name: started at $vps_ip"
  elif [ "$(podman inspect "$vps_name" --format '{{.State.Running}}')" != true ]; then
    podman start "$vps_name" >/dev/null
    say "$vps_name: restarted"
  elif ! podman exec "$vps_name" true >/dev/null 2>&1; then
    podman stop -t 5 "$vps_name" >/dev/null 2>&1 || true
    podman start "$vps_name" >/dev/null
    say "$vps_name: was not answering, restarted"
  fi
}

# A little realistic site content, written once per site (a site's files are the customer's:
# later runs leave them as they are): a 0600 wp-config.php owned by the web server's user, a
# private directory, uploads with spaces and non-ASCII names, an extended attribute, a symbolic
# link and a hard-linked pair.
seed_vps() {
  local entry site root
  for entry in "${vps_sites[@]}"; do
    site=${entry%%:*}; root=${entry#*:}
    podman exec -i "$vps_name" sh -s "$site" "$root" <<'SEED'
set -eu
site=$1; root=$2
[ -e "$root" ] && exit 0
rm -rf "$root.seed"
mkdir -p "$root.seed/wp-content/uploads/2024/05" "$root.seed/wp-content/cache" "$root.seed/private"
cd "$root.seed"
printf '<?php\n// %s front controller\nrequire __DIR__ . "/wp-blog-header.php";\n' "$site" >index.php
printf "<?php\ndefine('DB_NAME', '%s');\ndefine('DB_PASSWORD', 'lab-only-not-a-secret');\n" "$site" >wp-config.php
chmod 0600 wp-config.php
head -c 150000 /dev/urandom >wp-content/uploads/2024/05/photo.jpg
printf 'minutes of the meeting\n' >"wp-content/uploads/2024/05/Annual report (final).txt"
printf 'crème brûlée, ünïcödé, 日本語\n' >"wp-content/uploads/2024/05/café menu – été.txt"
head -c 40000 /dev/urandom >wp-content/uploads/2024/05/original.bin
ln wp-content/uploads/2024/05/original.bin wp-content/cache/same-as-original.bin
printf 'internal notes\n' >private/notes.txt
chmod 0750 private
chmod 0640 private/notes.txt
ln -s wp-content/uploads uploads-link
python3 -c 'import os; os.setxattr("wp-content/uploads/2024/05/photo.jpg", "user.chom.origin", b"camera roll")'
chown -R 33:33 .
chmod 0755 .
cd /
mv "$root.seed" "$root"
SEED
  done
}

authorize_controller() {  # $1 container name, $2 address
  local name=$1 ip=$2 pub
  pub=$(cat "$state/ssh/id_ed25519.pub")
  for _ in $(seq 1 50); do
    podman exec "$name" test -f /etc/ssh/ssh_host_ed25519_key.pub 2>/dev/null && break
    sleep 0.2
  done
  podman exec "$name" sh -c "grep -qxF '$pub' /root/.ssh/authorized_keys 2>/dev/null \
    || echo '$pub' >> /root/.ssh/authorized_keys; chmod 600 /root/.ssh/authorized_keys"
  # Host keys are read from the container itself, not trusted from the network.
  podman exec "$name" cat /etc/ssh/ssh_host_ed25519_key.pub \
    | awk -v ip="$ip" '{print ip, $1, $2}' >>"$state/known_hosts.new"
  for _ in $(seq 1 50); do
    ssh -i "$state/ssh/id_ed25519" -o BatchMode=yes -o ConnectTimeout=2 \
      -o UserKnownHostsFile="$state/known_hosts.new" "root@$ip" true 2>/dev/null && return 0
    sleep 0.2
  done
  say "$name: SSH did not answer"; return 1
}

random_secret() {  # $1 length; letters and digits
  tr -dc 'A-Za-z0-9' </dev/urandom | head -c "$1"
}

# Secrets, keys and known hosts belong to the running lab, not to a checkout: any checkout
# that drives the lab gets a copy of the same secrets.
write_secrets() {
  local file="$state/secrets.yml" copy="$repo/inventories/lab/group_vars/all/lab_secrets.yml"
  if [ ! -s "$file" ]; then
    (umask 077; generate_secrets >"$file")
  elif ! grep -q '^lab_offsite_access_key:' "$file"; then
    offsite_secrets >>"$file"
  fi
  mkdir -p "$(dirname "$copy")"
  install -m 0600 "$file" "$copy"
}

generate_secrets() {
  # The admin secret deliberately holds a space, quotes, $ and ! to prove they survive.
  cat <<YAML
---
# Generated by lab/lab.sh for this lab only. Never commit.
lab_admin_access_key: chomadmin$(random_secret 8)
lab_admin_secret_key: 'sp ace "dq" ''sq'' \$dollar !bang $(random_secret 12)'
lab_app_access_key: chomapp$(random_secret 10)
lab_app_secret_key: $(random_secret 32)
lab_replication_access_key: chomrepl$(random_secret 9)
lab_replication_secret_key: $(random_secret 32)
lab_db_password: $(random_secret 24)
YAML
  offsite_secrets
}

offsite_secrets() {
  echo "lab_offsite_access_key: chomoffsite$(random_secret 8)"
  echo "lab_offsite_secret_key: $(random_secret 32)"
  echo "lab_offsite_encryption_key: $(head -c 32 /dev/urandom | base64)"
}

secret_value() {  # $1 key of the lab's secrets
  "$repo/.venv/bin/python" - "$state/secrets.yml" "$1" <<'PY'
import sys, yaml
print(yaml.safe_load(open(sys.argv[1]))[sys.argv[2]])
PY
}

start_database() {
  local data="$state/pg" password
  password=$(secret_value lab_db_password)
  mkdir -p "$state"
  if [ ! -f "$data/PG_VERSION" ]; then
    install -d -o postgres -g postgres -m 0700 "$data"
    local pwfile; pwfile=$(mktemp); chown postgres "$pwfile"
    printf '%s\n' "$password" >"$pwfile"
    runuser -u postgres -- "$pg_bin/initdb" -D "$data" -U postgres --auth=scram-sha-256 \
      --pwfile="$pwfile" >/dev/null
    rm -f "$pwfile"
  fi
  if ! runuser -u postgres -- "$pg_bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    runuser -u postgres -- "$pg_bin/pg_ctl" -D "$data" -l "$data/server.log" -w \
      -o "-c listen_addresses=127.0.0.1 -c port=$pg_port -c unix_socket_directories=$data" start >/dev/null
    say "control-plane database started on 127.0.0.1:$pg_port"
  fi
  # The password goes through the environment and stdin, never the command line.
  if ! PGPASSWORD=$password "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -qtAc \
      "SELECT 1 FROM pg_roles WHERE rolname = 'chom_storage'" | grep -q 1; then
    printf "CREATE ROLE chom_storage LOGIN PASSWORD '%s';\nCREATE DATABASE chom OWNER chom_storage;\n" "$password" \
      | PGPASSWORD=$password "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -q -v ON_ERROR_STOP=1
  fi
}

write_inventory() {
  local file="$repo/inventories/lab/hosts.yml" i entry
  {
    echo "---"
    echo "# Generated by lab/lab.sh: the lab's storage hosts. Settings are in group_vars/."
    echo "all:"
    echo "  vars:"
    echo "    ansible_user: root"
    echo "    ansible_ssh_private_key_file: $state/ssh/id_ed25519"
    echo "    ansible_ssh_common_args: -o UserKnownHostsFile=$state/known_hosts -o StrictHostKeyChecking=yes"
    echo "    lab_repo: $repo"
    echo "    control_plane_db_port: $pg_port"
    echo "  children:"
    echo "    storage_hosts:"
    echo "      children:"
    echo "        storage_primary:"
    echo "          hosts:"
    echo "            $(host_name 1):"
    echo "              ansible_host: $(host_ip 1)"
    echo "        storage_replica:"
    echo "          hosts:"
    echo "            $(host_name 2):"
    echo "              ansible_host: $(host_ip 2)"
    if [ "$hosts_count" -gt 2 ]; then
      echo "        storage_pool:"
      echo "          hosts:"
      for i in $(seq 3 "$hosts_count"); do
        echo "            $(host_name "$i"):"
        echo "              ansible_host: $(host_ip "$i")"
      done
    fi
    echo "    customer_vps:"
    echo "      hosts:"
    echo "        $vps_name:"
    echo "          ansible_host: $vps_ip"
    echo "          customer_vps_sites:"
    for entry in "${vps_sites[@]}"; do
      echo "            - site: ${entry%%:*}"
      echo "              document_root: ${entry#*:}"
    done
    echo "    monitoring:"
    echo "      hosts:"
    echo "        localhost:"
    echo "          ansible_connection: local"
    echo "          ansible_python_interpreter: $repo/.venv/bin/python"
    echo "          monitoring_prometheus_manage_service: false"
    echo "          monitoring_prometheus_config_dir: $state/prometheus"
  } >"$file.new"
  mv "$file.new" "$file"
}

cmd_up() {
  [ "$(id -u)" -eq 0 ] || { say "run as root (podman hosts, loop devices)"; exit 1; }
  [ "$hosts_count" -ge 2 ] || { say "HOSTS must be at least 2"; exit 1; }
  # The lab grows but never shrinks here: storage hosts already created (with their data and their
  # control-plane records) stay in the inventory. lab/lab.sh down starts over smaller.
  local existing
  existing=$(podman ps -a --filter "label=$label=host" --format '{{.Names}}' \
    | sed -n 's/^storage-\([0-9][0-9]*\)$/\1/p' | sort -n | tail -n1)
  if [ -n "$existing" ] && [ "$existing" -gt "$hosts_count" ]; then
    say "keeping the lab's $existing storage hosts (HOSTS=$hosts_count); lab/lab.sh down to start over smaller"
    hosts_count=$existing
  fi
  "$repo/lab/setup-host.sh"
  image=$("$repo/lab/host-image.sh")
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
  mkdir -p "$state"
  install -d -m 0700 "$state/ssh"
  [ -f "$state/ssh/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C chom-lab -f "$state/ssh/id_ed25519"
  podman network exists "$network" || podman network create --subnet "${subnet_prefix}.0/24" \
    --label "$label=network" "$network" >/dev/null
  : >"$state/known_hosts.new"
  for i in $(seq 1 "$hosts_count"); do start_host "$i"; done
  start_vps
  for i in $(seq 1 "$hosts_count"); do authorize_controller "$(host_name "$i")" "$(host_ip "$i")"; done
  authorize_controller "$vps_name" "$vps_ip"
  seed_vps
  mv "$state/known_hosts.new" "$state/known_hosts"
  write_secrets
  start_database
  write_inventory
  local ready=""
  for i in $(seq 1 "$hosts_count"); do ready+="$(host_name "$i")=$(host_ip "$i") "; done
  say "hosts ready: $ready$vps_name=$vps_ip"
}

cmd_down() {
  local name dev img
  for name in $(podman ps -a --filter "label=$label=host" --format '{{.Names}}'); do
    podman rm -f "$name" >/dev/null && say "removed container $name"
  done
  for img in "$state"/disks/*.img; do
    [ -f "$img" ] || continue
    for dev in $(losetup --associated "$img" | cut -d: -f1); do
      losetup -d "$dev" && say "detached $dev"
    done
    rm -f "$img"
  done
  if [ -f "$state/offsite/weed.pid" ] && kill -0 "$(cat "$state/offsite/weed.pid")" 2>/dev/null; then
    kill "$(cat "$state/offsite/weed.pid")" && say "stopped the offsite target"
  fi
  rm -rf "$state/offsite"
  if [ -f "$state/prometheus.pid" ] && kill -0 "$(cat "$state/prometheus.pid")" 2>/dev/null; then
    kill "$(cat "$state/prometheus.pid")" && say "stopped Prometheus"
  fi
  if [ -n "$pg_bin" ] && [ -f "$state/pg/PG_VERSION" ]; then
    runuser -u postgres -- "$pg_bin/pg_ctl" -D "$state/pg" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$state/pg"
    say "removed the control-plane database"
  fi
  podman network exists "$network" && podman network rm "$network" >/dev/null && say "removed network $network"
  rm -rf "$state"
  rm -f "$repo/inventories/lab/hosts.yml" "$repo/inventories/lab/group_vars/all/lab_secrets.yml"
}

# Prometheus for the lab runs on this machine as a plain process (the Debian package, its own
# configuration written by site.yml), listening on loopback only.
cmd_prometheus() {
  local pidfile="$state/prometheus.pid"
  [ -f "$state/prometheus/prometheus.yml" ] || { say "no Prometheus configuration yet (run site.yml)"; exit 1; }
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill -HUP "$(cat "$pidfile")"
    return 0
  fi
  mkdir -p "$state/prometheus/data"
  nohup prometheus --config.file="$state/prometheus/prometheus.yml" \
    --storage.tsdb.path="$state/prometheus/data" --web.listen-address=127.0.0.1:${CHOM_LAB_PROMETHEUS_PORT:-59090} \
    >"$state/prometheus/prometheus.log" 2>&1 &
  echo $! >"$pidfile"
  say "Prometheus started on 127.0.0.1:${CHOM_LAB_PROMETHEUS_PORT:-59090}"
}

# The offsite archive target of the lab: one more SeaweedFS (`weed mini`) on this machine, on
# loopback only, with its own key and the bucket chom-offsite. The offsite copy runs on the
# controller, so the storage hosts never reach it.
offsite_port=${CHOM_LAB_OFFSITE_PORT:-48305}
cmd_offsite() {
  local dir="$state/offsite" pidfile="$state/offsite/weed.pid"
  mkdir -p "$dir/data"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    return 0
  fi
  (umask 077; "$repo/.venv/bin/python" - "$state/secrets.yml" >"$dir/identities.json" <<'PY'
import json, sys, yaml
s = yaml.safe_load(open(sys.argv[1]))
key = {"accessKey": s["lab_offsite_access_key"], "secretKey": s["lab_offsite_secret_key"]}
print(json.dumps({"identities": [{"name": "offsite", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                                  "credentials": [key]}]}))
PY
  )
  local base=$((offsite_port - 4))
  nohup "$repo/.venv/bin/weed" mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -admin.port=$base -admin.port.grpc=$((base + 10000)) \
    -master.port=$((base + 1)) -master.port.grpc=$((base + 11)) \
    -volume.port=$((base + 2)) -volume.port.grpc=$((base + 12)) \
    -filer.port=$((base + 3)) -filer.port.grpc=$((base + 13)) \
    -s3.port="$offsite_port" -s3.port.grpc=$((offsite_port + 10)) -s3.port.iceberg=$((offsite_port + 1)) \
    -s3.port.lance=$((offsite_port + 2)) -master.telemetry=false -webdav=false -admin.ui=false \
    -s3.autoCreateBucket=false -s3.config="$dir/identities.json" -volume.preStopSeconds=0 \
    >"$dir/weed.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  "$repo/.venv/bin/python" - "$state/secrets.yml" "http://127.0.0.1:$offsite_port" <<'PY'
import sys, time, yaml
import boto3
from botocore.config import Config
s = yaml.safe_load(open(sys.argv[1]))
c = boto3.client("s3", endpoint_url=sys.argv[2], aws_access_key_id=s["lab_offsite_access_key"],
                 aws_secret_access_key=s["lab_offsite_secret_key"], region_name="us-east-1",
                 config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
for _ in range(120):
    try:
        names = [b["Name"] for b in c.list_buckets()["Buckets"]]
        break
    except Exception:
        time.sleep(0.5)
else:
    sys.exit("offsite engine did not answer")
if "chom-offsite" not in names:
    c.create_bucket(Bucket="chom-offsite")
PY
  say "offsite target on 127.0.0.1:$offsite_port"
}

cmd_status() {
  podman ps -a --filter "label=$label=host" --format '{{.Names}} {{.Status}}'
  losetup --list | grep "$state" || true
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  prometheus) cmd_prometheus ;;
  offsite) cmd_offsite ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|prometheus|offsite|status" >&2; exit 2 ;;
esac
