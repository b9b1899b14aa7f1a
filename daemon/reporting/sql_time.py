"""SQL functions compiled per dialect. ``seconds_between(later, earlier)``: the seconds from one
timestamp column to another, as a float (SQLite stores UTC text: julianday arithmetic, rounded to
the millisecond so whole minutes stay whole; PostgreSQL ``timestamptz``: exact). ``email_domain``:
the domain of an address. No SQL text from input."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


class seconds_between(FunctionElement[float]):  # noqa: N801 - SQL function style
    type = Float()
    inherit_cache = True
    name = "seconds_between"


@compiles(seconds_between, "sqlite")
def _sqlite(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    later, earlier = (compiler.process(c, **kw) for c in element.clauses)
    return f"ROUND((julianday({later}) - julianday({earlier})) * 86400.0, 3)"


@compiles(seconds_between, "postgresql")
def _postgresql(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    later, earlier = (compiler.process(c, **kw) for c in element.clauses)
    return f"EXTRACT(EPOCH FROM ({later} - {earlier}))"


class email_domain(FunctionElement[str]):  # noqa: N801 - SQL function style
    """The domain of an email address column, lower-cased (``--by domain``); NULL without an ``@``."""

    type = String()
    inherit_cache = True
    name = "email_domain"


@compiles(email_domain, "sqlite")
def _sqlite_domain(element: email_domain, compiler: SQLCompiler, **kw: Any) -> str:
    (address,) = (compiler.process(c, **kw) for c in element.clauses)
    return f"NULLIF(LOWER(SUBSTR({address}, INSTR({address}, '@') + 1)), LOWER({address}))"


@compiles(email_domain, "postgresql")
def _postgresql_domain(element: email_domain, compiler: SQLCompiler, **kw: Any) -> str:
    (address,) = (compiler.process(c, **kw) for c in element.clauses)
    return f"NULLIF(LOWER(SPLIT_PART({address}, '@', 2)), '')"
