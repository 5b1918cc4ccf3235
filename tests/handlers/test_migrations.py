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


def test_the_upgrade_refuses_a_currency_whose_decimals_changed_and_changes_nothing(tmp_path):
    """Amounts are kept in minor units. Since revision 0005 a currency's decimals come from the CLDR data
    (HUF: 0), where our own table said 2: an existing HUF account's 1,000.00 would read as 100,000. The
    upgrade refuses, naming the currency, and leaves the database at 0004; EUR accounts upgrade."""
    import datetime as dt

    import pytest
    from sqlalchemy import text

    from handlers.errors import Conflict
    for currency, refused in (("HUF", True), ("EUR", False)):
        engine = create_engine(f"sqlite:///{tmp_path}/{currency}.db")
        try:
            upgrade(engine, "0004")
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO account (ref, name, status, currency, credit_limit_minor, invoicing, "
                                  "auto_suspend, overdue_notices, require_dmarc, created_at) VALUES ('bp', 'Budapest',"
                                  " 'active', :cur, 0, 'electronic', 0, 1, 0, :at)"),
                             {"cur": currency, "at": dt.datetime(2026, 12, 1)})
            if refused:
                with pytest.raises(Conflict, match="in HUF hold amounts written with different decimals"):
                    upgrade(engine)
                assert current_revision(engine) == "0004"
            else:
                upgrade(engine)
                assert current_revision(engine) == head_revision()
        finally:
            engine.dispose()
