# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Connection options shared by every control-plane module, and the connection itself."""

from __future__ import annotations

try:
    import psycopg

    HAS_PSYCOPG = True
    PSYCOPG_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the controller
    HAS_PSYCOPG = False
    PSYCOPG_IMPORT_ERROR = exc


def connection_argument_spec() -> dict:
    return dict(
        db_host=dict(type="str", default="localhost"),
        db_port=dict(type="int", default=5432),
        db_name=dict(type="str", default="chom"),
        db_user=dict(type="str", default="chom_storage"),
        db_password=dict(type="str", no_log=True),
        db_sslmode=dict(type="str", default="prefer",
                        choices=["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]),
        db_connect_timeout=dict(type="int", default=10),
    )


def connect(module):
    """Open a connection from module params; fail the module with one clear sentence."""
    if not HAS_PSYCOPG:
        module.fail_json(msg="The psycopg (3) Python package is required on the controller",
                         exception=str(PSYCOPG_IMPORT_ERROR))
    params = module.params
    try:
        return psycopg.connect(
            host=params["db_host"],
            port=params["db_port"],
            dbname=params["db_name"],
            user=params["db_user"],
            password=params["db_password"],
            sslmode=params["db_sslmode"],
            connect_timeout=params["db_connect_timeout"],
            application_name="chom.storage",
            autocommit=True,
        )
    except psycopg.Error as exc:
        module.fail_json(msg=f"Cannot connect to the control-plane database "
                             f"{params['db_host']}:{params['db_port']}/{params['db_name']}: {exc}".strip())
