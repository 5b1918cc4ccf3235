"""The Alembic migrations build exactly the schema the models describe, on both databases."""
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from handlers.models import Base
from renewdesk.migrate import current_revision, head_revision, upgrade


def test_migrated_schema_matches_the_models(db_url):
    """No table, column, index or constraint differs between `db upgrade` and the models."""
    engine = create_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == []
        assert upgrade(engine) is False   # a second upgrade has nothing to do
    finally:
        engine.dispose()
