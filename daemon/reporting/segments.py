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

import yaml
from pydantic import Field, TypeAdapter, ValidationError

from daemon.campaign import Condition
from daemon.errors import InvalidInput, Problem

OTHER = "other"
SegmentName = Annotated[str, Field(min_length=1, max_length=100)]
_ADAPTER: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[SegmentName, Condition])


def parse_segments(data: Any, source: str = "<segments>") -> list[tuple[str, Any]]:
    """Validated (name, condition) pairs in file order; every problem in one ``InvalidInput``."""
    if not isinstance(data, dict) or not data:
        raise InvalidInput([Problem(source, 1, 1, "a segments file maps segment names to conditions")])
    if OTHER in data:
        raise InvalidInput([Problem(source, 1, 1, f"'{OTHER}' is reserved for contacts in no segment")])
    try:
        parsed = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        problems = [
            Problem(source, 1, 1, f"{'.'.join(str(p) for p in e['loc'][:2])}: {e['msg']}")
            for e in exc.errors(include_url=False)
        ]
        raise InvalidInput(problems) from None
    return list(parsed.items())


def load_segments(path: Path) -> list[tuple[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            [Problem(str(path), 1, 1, f"cannot read the segments file: {getattr(exc, 'strerror', None) or exc}")]
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise InvalidInput([Problem(str(path), line, col, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    return parse_segments(data, str(path))
