"""The migrations build the schema the code declares, and undo it, on both stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from inferq.db.engine import sync_url
from inferq.db.migrate import alembic_config, upgrade
from inferq.db.tables import metadata
from tests.conftest import database_params, drop_postgres, fresh_postgres, postgres_url


@pytest.fixture(params=database_params())
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'inferq.db'}"
        return
    admin = postgres_url()
    assert admin is not None
    url, name = fresh_postgres(admin)
    try:
        yield url
    finally:
        drop_postgres(admin, name)


def _differences(database_url: str) -> list[object]:
    engine = sa.create_engine(sync_url(database_url))
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), metadata))
    finally:
        engine.dispose()


def _tables(database_url: str) -> set[str]:
    engine = sa.create_engine(sync_url(database_url))
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_the_migrations_build_the_declared_schema_and_undo_it(empty_database: str) -> None:
    upgrade(empty_database)
    assert _differences(empty_database) == []

    command.downgrade(alembic_config(empty_database), "base")
    assert _tables(empty_database) == set()

    upgrade(empty_database)  # and again, from nothing
    assert _differences(empty_database) == []
