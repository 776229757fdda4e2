"""Set-based statements for the hot paths, chosen per dialect in one place.

Many rows travel as one parameter: PostgreSQL unnests typed arrays, SQLite reads a JSON array
with json_each. Either way a 10,000-contact upload is a handful of statements, not 10,000.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

_PG_SCALARS = {"text": "TEXT", "bigint": "BIGINT", "bool": "BOOLEAN"}
_PG_TYPES = {kind: f"{scalar}[]" for kind, scalar in _PG_SCALARS.items()}


def _json(values: Sequence[Any]) -> str:
    """Values (rows as tuples or lists) as the JSON text SQLite's json_each reads: msgspec
    writes 5,000 rows in a tenth of json.dumps' time."""
    return msgspec.json.encode(
        values if isinstance(values, list | tuple) else list(values)
    ).decode()


@lru_cache(maxsize=1024)
def sql(text: str) -> sa.TextClause:
    """`sa.text(text)`, built once per distinct text: the hot statements are assembled from
    fragments (these helpers', the dialect's) but not from values, so there are few distinct
    texts, and building one (its bind parameters found by a regular expression) cost ~5% of
    an incremental upload's CPU."""
    return sa.text(text)


def rows_source(
    dialect: str,
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[Any]],
    alias: str = "t",
) -> tuple[str, dict[str, Any]]:
    """A FROM-clause fragment that yields `rows` as a table `alias(columns…)`.

    columns: (name, type) with type in text/bigint/bool. Returns (sql, params).

    The rows travel as one JSON text on both databases. On PostgreSQL typed arrays (one per
    column, unnested) cost the driver 4.3 ms of this process's CPU to encode 5,000 rows of
    four columns, the JSON 0.3 ms, and the statement as a whole was faster too (4.5 against
    6.7 ms).
    """
    names = [name for name, _ in columns]
    if len(columns) == 1:  # (one column: a plain list, its values as they are)
        ((name, kind),) = columns
        values = _json([row[0] for row in rows])
        if dialect == "postgresql":
            each = f"json_array_elements_text(CAST(:{alias}_rows AS json)) AS e(v)"
            sql = f"(SELECT CAST(e.v AS {_PG_SCALARS[kind]}) AS {name} FROM {each}) AS {alias}"
        else:
            sql = f"(SELECT value AS {name} FROM json_each(:{alias}_rows)) AS {alias}"
        return sql, {f"{alias}_rows": values}
    if dialect == "postgresql":
        fields = ", ".join(
            f"CAST(e->>{i} AS {_PG_SCALARS[kind]}) AS {name}"
            for i, (name, kind) in enumerate(columns)
        )
        sql = f"(SELECT {fields} FROM json_array_elements(CAST(:{alias}_rows AS json)) AS e)"
        return f"{sql} AS {alias}", {f"{alias}_rows": _json(rows)}
    fields = ", ".join(f"json_extract(value, '$[{i}]') AS {name}" for i, name in enumerate(names))
    sql = f"(SELECT {fields} FROM json_each(:{alias}_rows)) AS {alias}"
    return sql, {f"{alias}_rows": _json(rows)}


def in_list(
    dialect: str, column: str, values: Sequence[Any], name: str, kind: str = "text"
) -> tuple[str, dict[str, Any]]:
    """`column IN values` as one parameter: (sql, params).

    On PostgreSQL `= ANY(array)`, which an index scan can use directly. (The engine plans
    every execution with its real parameters: see `Database.from_url`.)
    """
    if dialect == "postgresql":
        return f"{column} = ANY(CAST(:{name} AS {_PG_TYPES[kind]}))", {name: list(values)}
    return (
        f"{column} IN (SELECT value FROM json_each(:{name}))",
        {name: _json(values)},
    )


IN_MANY_FROM = 100  # values, from which `in_many` is a semi-join


def in_many(
    dialect: str, column: str, values: Sequence[Any], name: str, kind: str = "text"
) -> tuple[str, dict[str, Any]]:
    """`in_list` for thousands of values that the rows are filtered by, not found by (the
    numbers of an upload among the owner's book): on PostgreSQL a semi-join against the
    unnested array. `= ANY` of a 5,000-element array cost 16 ms there (the planner estimates
    each element, the filter searches the array row by row), the semi-join 2 ms. A few values
    stay `= ANY`, an index condition whatever the planner believes of the table: with
    statistics taken while the table was nearly empty it drove the semi-join of 10 numbers
    from a whole scan of the numbers' index (26 ms against 0.1)."""
    if dialect == "postgresql" and len(values) >= IN_MANY_FROM:
        return (
            f"{column} IN (SELECT unnest(CAST(:{name} AS {_PG_TYPES[kind]})))",
            {name: list(values)},
        )
    return in_list(dialect, column, values, name, kind)


def member(column: Any, values: Sequence[Any], dialect: str) -> Any:
    """`in_list` as a SQLAlchemy Core expression, for queries built with Core."""
    if dialect == "postgresql":
        return column == sa.any_(sa.literal(list(values), ARRAY(column.type)))
    each = sa.func.json_each(sa.literal(_json(values))).table_valued("value")
    return column.in_(sa.select(each.c.value))


def insert_ignore(table: sa.Table, dialect: str) -> Any:
    """INSERT that skips the rows whose key exists already (ON CONFLICT DO NOTHING)."""
    if dialect == "postgresql":
        return pg_insert(table).on_conflict_do_nothing()
    return sqlite_insert(table).on_conflict_do_nothing()


def locked(query: Any, dialect: str, *, key_share: bool = False) -> Any:
    """`query` taking a row lock where the database has row locks: FOR UPDATE on PostgreSQL
    (FOR NO KEY UPDATE with `key_share`, which leaves rows that merely reference it free);
    SQLite's single writer already excludes every other write."""
    if dialect == "postgresql":
        return query.with_for_update(key_share=key_share)
    return query


def insert_ignoring_conflicts(table: sa.Table, dialect: str, **values: Any) -> Any:
    """INSERT … ON CONFLICT DO NOTHING, in the dialect's own construct (both spell it so)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).values(**values).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).values(**values).on_conflict_do_nothing()


def json_text(dialect: str, column: str, *path: str) -> str:
    """SQL for the JSON value at `path` in `column`, as text."""
    if dialect == "postgresql":
        parents = "".join(f"->'{key}'" for key in path[:-1])
        return f"({column}{parents}->>'{path[-1]}')"
    return f"CAST(json_extract({column}, '$.{'.'.join(path)}') AS TEXT)"


def packed(dialect: str, columns: Sequence[str], where: str | None = None) -> str:
    """A select list that packs all the rows a query finds (those of them that match `where`)
    into one row of arrays (`unpack` gives the rows back): the driver decodes a few arrays in
    C instead of building a row object a number, for queries that return thousands of rows
    (the book held by an upload). Several packs of different rows may share one select list
    (`unpack_each`)."""
    only = f" FILTER (WHERE {where})" if where else ""
    if dialect == "postgresql":
        # one scan feeds every aggregate in the same order
        return ", ".join(f"array_agg({c}){only}" for c in columns)
    return f"json_group_array(json_array({', '.join(columns)})){only}"


def unpack(dialect: str, row: Sequence[Any] | None) -> list[tuple[Any, ...]]:
    """The rows of a `packed` query's one row."""
    if row is None or row[0] is None:
        return []
    if dialect == "postgresql":
        return list(zip(*row, strict=True))
    return [tuple(r) for r in msgspec.json.decode(row[0])]


def unpack_each(
    dialect: str, row: Sequence[Any] | None, *widths: int
) -> list[list[tuple[Any, ...]]]:
    """The rows of each of several `packed` lists in one select list, of `widths` columns."""
    out: list[list[tuple[Any, ...]]] = []
    at = 0
    for width in widths:
        size = width if dialect == "postgresql" else 1
        out.append(unpack(dialect, None if row is None else row[at : at + size]))
        at += size
    return out


# Rows from which a statement's foreign-key checks are planned once (`checked_rows`).
CHECKED_ROWS = 100
_PLAN_ONCE = sa.text("SET LOCAL plan_cache_mode = auto")
_PLAN_AS_THE_SESSION = sa.text("SET LOCAL plan_cache_mode TO DEFAULT")  # (its connect option)


@asynccontextmanager
async def checked_rows(
    conn: AsyncConnection, dialect: str, rows: int | None
) -> AsyncIterator[None]:
    """Around one statement that writes `rows` rows with foreign keys or sets them (None: an
    unknown number, possibly many).

    PostgreSQL checks a foreign key with a small statement per row written, run from a plan
    it keeps. Our sessions plan every statement with its real parameters (plan_cache_mode
    force_custom_plan, see `Database.from_url`), and that applies to those checks too: each
    was planned again, per row. Measured, 5,000 new book entries: 58 ms of checks against 20
    ms with kept plans, a third of the upload. So for a statement of many rows the
    transaction goes back to the server's default for that statement, and then to the
    session's own setting. (No reset on failure: the transaction is rolled back, and its
    SET LOCAL with it.) SQLite has no plan cache: nothing to do."""
    if dialect != "postgresql" or (rows is not None and rows < CHECKED_ROWS):
        yield
        return
    await conn.execute(_PLAN_ONCE)
    yield
    await conn.execute(_PLAN_AS_THE_SESSION)
