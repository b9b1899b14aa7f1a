"""The webhook's signature, timestamp window and body reading."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from topslot.attribution.webhook import (
    MAX_BATCH,
    MAX_DEPTH,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookError,
    WebhookSigner,
    error_answer,
    parse_conversion,
    signature_for,
    signed_headers,
    webhook_answer,
)
from topslot.json_depth import nesting_depth

KEY = "whsec-test-0123456789"
NOW = datetime(2027, 5, 6, 1, 0, tzinfo=UTC)
ORDER = {"order_id": "A-1", "occurred_at": "2027-05-06T09:15:00+08:00", "revenue": 19.9}


def signed(body: bytes, at: datetime = NOW, key: str = KEY) -> tuple[str, str]:
    headers = signed_headers(key, body, at)
    return headers[SIGNATURE_HEADER], headers[TIMESTAMP_HEADER]


def refused(body: bytes, signature: str | None, timestamp: str | None, key: str | None = KEY) -> WebhookError:
    with pytest.raises(WebhookError) as caught:
        parse_conversion(body, signature, timestamp, key, NOW)
    return caught.value


def test_a_signed_single_order_is_read() -> None:
    body = json.dumps(ORDER).encode()
    parsed = parse_conversion(body, *signed(body), KEY, NOW)
    assert [c.order_id for c in parsed.inputs] == ["A-1"] and parsed.problems == [] and parsed.rejected == 0
    assert str(parsed.inputs[0].revenue) == "19.90"  # a JSON float read through its text
    assert webhook_answer(parsed, 1, 0) == (200, {"recorded": 1, "duplicates": 0, "rejected": 0})


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    body = b'{"x":1}'
    expected = hmac.new(KEY.encode(), b"1809651600." + body, hashlib.sha256).hexdigest()
    assert signature_for(KEY, "1809651600", body) == "sha256=" + expected


def test_a_signer_gives_what_signed_headers_gives_for_every_body() -> None:
    signer = WebhookSigner(KEY)
    for body in (b"", b'{"a":1}', "订单".encode() * 300):
        assert signer.headers(body, int(NOW.timestamp())) == signed_headers(KEY, body, NOW)
    assert WebhookSigner(KEY.encode()).headers(b"x", 5) == signed_headers(KEY, b"x", datetime.fromtimestamp(5, UTC))
    assert KEY not in repr(signer)


def test_forged_altered_and_stale_requests_are_refused() -> None:
    body = json.dumps(ORDER).encode()
    signature, stamp = signed(body)
    assert refused(body.replace(b"19.9", b"99.9"), signature, stamp).status == 401  # body altered
    assert refused(body, signature, str(int(stamp) + 1)).status == 401  # timestamp altered: it is signed
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    assert refused(body, flipped, stamp).reason == "bad signature"
    assert refused(body, *signed(body, key="another-key-0123456789")).status == 401
    old = NOW - timedelta(minutes=5, seconds=1)
    assert "minutes off" in refused(body, *signed(body, at=old)).reason
    assert refused(body, None, stamp).status == 401 and refused(body, signature, None).status == 401
    assert refused(body, signature, "12.5").status == 401 and refused(body, "sha256=é", stamp).status == 401
    assert refused(body, signature, stamp, key=None).status == 503
    within = NOW - timedelta(minutes=4, seconds=59)
    assert parse_conversion(body, *signed(body, at=within), KEY, NOW).inputs  # inside the window


def test_upper_case_hex_is_accepted() -> None:
    body = json.dumps(ORDER).encode()
    signature, stamp = signed(body)
    assert parse_conversion(body, "sha256=" + signature[7:].upper(), stamp, KEY, NOW).inputs


def test_bad_bodies() -> None:
    for body, status in (
        (b"\xff\xfe", 400),
        (b"[1, 2]", 400),
        (b'{"conversions": 3}', 400),
        (b"x" * (1024 * 1024 + 1), 413),
    ):
        assert refused(body, *signed(body)).status == status
    many = json.dumps({"conversions": [ORDER] * (MAX_BATCH + 1)}).encode()
    assert refused(many, *signed(many)).status == 413
    deep = b"[" * 100_000 + b"]" * 100_000
    assert refused(deep, *signed(deep)).status == 400
    assert error_answer(WebhookError(401, "bad signature")) == (401, {"error": "bad signature"})


def test_nesting_is_measured_before_parsing() -> None:
    def nested(depth: int, opening: bytes = b"[", closing: bytes = b"]") -> bytes:
        return opening * depth + closing * depth

    assert nesting_depth(nested(MAX_DEPTH)) == MAX_DEPTH
    assert nesting_depth(b'{"conversions": [{"a": [1, {"b": []}]}, {}]}') == 6
    assert nesting_depth(b"[{" * 17 + b"}]" * 17) == 34  # kinds alternate
    assert nesting_depth(b'{"a":' * 100_000 + b"1") == 100_000
    brackets_in_text = json.dumps({"note": "[[[{{{" * 1000, "q": 'say "[[[" \\'}).encode()
    assert nesting_depth(brackets_in_text) == 1  # brackets inside strings (with escapes) do not count
    # an unterminated string is not a string: its brackets count (never less than the parser reaches)
    assert nesting_depth(b'["\\"[[[') == 4 and nesting_depth(b"]]]") == 0 and nesting_depth(b"") == 0
    assert nesting_depth('["é", {"ü": "]"}]'.encode()) == 2


def test_too_deep_bodies_are_400_without_a_recursion_error() -> None:
    for body in (
        b"[" * 100_000 + b"]" * 100_000,
        b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b"[" * 300_000,
    ):
        error = refused(body, *signed(body))
        assert error.status == 400 and error.reason == f"the body is not JSON nested at most {MAX_DEPTH} levels deep"
    assert refused(b'"\\"' * 100_000, *signed(b'"\\"' * 100_000)).status == 400
    extra: object = "x"
    for _ in range(MAX_DEPTH - 3):  # under the body's object, the list and the item's object
        extra = [extra]
    allowed = json.dumps({"conversions": [{**ORDER, "extra": extra}]}).encode()
    assert nesting_depth(allowed) == MAX_DEPTH
    assert [c.order_id for c in parse_conversion(allowed, *signed(allowed), KEY, NOW).inputs] == ["A-1"]


def test_a_batch_keeps_good_items_and_locates_bad_ones() -> None:
    items = [
        ORDER,
        {**ORDER, "order_id": "A-2", "revenue": "1.234", "note": "<b>hi</b>"},
        "nope",
        {**ORDER, "order_id": "A-3"},
    ]
    body = json.dumps({"conversions": items}).encode()
    parsed = parse_conversion(body, *signed(body), KEY, NOW)
    assert [c.order_id for c in parsed.inputs] == ["A-1", "A-3"]
    assert parsed.rejected == 2
    assert parsed.problems == [
        "conversions[1].revenue: revenue has more than 2 decimals",
        "conversions[2]: a conversion must be a JSON object",
    ]
    status, answer = webhook_answer(parsed, 2, 0)
    assert status == 422 and answer["rejected"] == 2 and "<b>" not in json.dumps(answer)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"order_id":"A\\ud800","occurred_at":"2027-05-06T09:15:00+08:00","revenue":"19.90"}', "unpaired surrogate"),
        (b'{"conversions":[{"order_id":"A-1\\u0000","revenue":1}]}', "NUL character"),
        (b'{"order_id":"A-1","occurred_at":"2027-05-06T09:15:00+08:00","revenue":NaN}', "NaN is not a number"),
        (b'{"order_id":"A-1","x\\udc00":1}', "unpaired surrogate"),  # in a key too
    ],
    ids=["surrogate", "nul", "nan", "surrogate key"],
)
def test_values_the_database_cannot_store_refuse_the_body_with_400(body: bytes, reason: str) -> None:
    """Read by the same loader as imported JSON Lines: refused here as a whole, not at insert (a 500)."""
    error = refused(body, *signed(body))
    assert error.status == 400 and reason in error.reason
    assert "A-1" not in error.reason  # never the input


def test_integers_over_20_digits_are_text_for_field_validation() -> None:
    body = json.dumps({**ORDER, "units": 10**25}).encode()
    parsed = parse_conversion(body, *signed(body), KEY, NOW)
    assert parsed.rejected == 1 and parsed.problems and parsed.problems[0].startswith("units: ")
