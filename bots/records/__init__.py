"""The records database (SQLAlchemy 2 + Alembic) and content-addressed files.

    db = await open_database(settings.database_url)      # migrates to the newest schema
    files = FileStore.for_data_dir(settings.data_dir)
    records = Records(db.sessions, files, reads=db.reads)
    await records.apply(key, inbound.message_id, events, now)

Submodules: `models` (tables), `db` (engine, migrations), `writer` (record events), `files`.
"""

from bots.records.db import Database, open_database, upgrade
from bots.records.files import FileStore
from bots.records.writer import Records, apply, delete_personal_data, load_profile, touch_identity

__all__ = [
    "Database",
    "FileStore",
    "Records",
    "apply",
    "delete_personal_data",
    "load_profile",
    "open_database",
    "touch_identity",
    "upgrade",
]
