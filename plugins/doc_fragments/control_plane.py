# Copyright: CHOM platform team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  db_host:
    description: Host of the control-plane PostgreSQL server.
    type: str
    default: localhost
  db_port:
    description: Port of the control-plane PostgreSQL server.
    type: int
    default: 5432
  db_name:
    description: Name of the control-plane database.
    type: str
    default: chom
  db_user:
    description: Role used to connect.
    type: str
    default: chom_storage
  db_password:
    description: Password of O(db_user). Never logged.
    type: str
  db_sslmode:
    description: libpq C(sslmode) of the connection.
    type: str
    default: prefer
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  db_connect_timeout:
    description: Seconds to wait for the connection.
    type: int
    default: 10
requirements:
  - psycopg >= 3.1 on the host running the module (usually the controller)
"""
