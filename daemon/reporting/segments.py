"""Named report segments: a YAML file mapping a name to an audience condition, e.g.::

    young: {attribute: age, lt: 30}
    vip: {tag: vip}
    cosmetics buyers: {purchased: {category: cosmetics, within_days: 365}}

Each contact falls in the FIRST segment whose condition holds (so the groups add up to the total),
else in ``other``. Without a file, the segment is the contact's country.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from topslot.campaign import Condition
from topslot.config.model_errors import validation_problems
from topslot.errors import InvalidInput
from topslot.yaml_source import YamlDocument, load_yaml

OTHER = "other"
SegmentName = Annotated[str, Field(min_length=1, max_length=100)]
Segments = dict[SegmentName, Condition]
_ADAPTER: TypeAdapter[dict[str, Any]] = TypeAdapter(Segments)


def parse_segments(data: Any, source: str = "<segments>", doc: YamlDocument | None = None) -> list[tuple[str, Any]]:
    """Validated (name, condition) pairs in file order; every problem in one ``InvalidInput``, located
    in ``doc`` (the loaded file) when given, else at ``source``'s first line."""
    doc = doc if doc is not None else YamlDocument(source, data=data)
    if not isinstance(data, dict) or not data:
        raise InvalidInput([doc.problem((1, 1), "a segments file maps segment names to conditions")])
    problems = list(doc.problems)  # duplicate keys, YAML traps
    if OTHER in data:
        where = doc.position_of((OTHER,), prefer_key=True)
        problems.append(doc.problem(where, f"'{OTHER}' is reserved for contacts in no segment"))
    try:
        parsed = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        problems += validation_problems(exc, doc, Segments, conditions_at_top=True)
    if problems:
        raise InvalidInput(problems)
    return list(parsed.items())


def load_segments(path: Path) -> list[tuple[str, Any]]:
    """The segments of a YAML file, read as safely as campaign files (``load_yaml``: bounded size,
    depth and aliases; YAML traps flagged); every problem at its line and column."""
    doc = load_yaml(path)
    if doc.syntax_error:
        raise InvalidInput(doc.problems)
    return parse_segments(doc.data, str(path), doc)
