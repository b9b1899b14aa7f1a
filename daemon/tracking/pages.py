"""Static response bodies and headers. Nothing here is built from a request: no page reflects input."""

from __future__ import annotations

import base64

# The smallest transparent 1×1 GIF (43 bytes).
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")

# On every response. The pages use inline CSS only; forms post back to the same URL.
SECURITY_HEADERS: dict[str, str] = {
    "Server": "topslot",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "interest-cohort=()",
}
NO_CACHE: dict[str, str] = {
    "Cache-Control": "no-store, no-cache, must-revalidate, private, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}
HTML = "text/html; charset=utf-8"

_STYLE = (
    "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f6f6;color:#222}"
    "main{max-width:28rem;margin:4rem auto;padding:2rem;background:#fff;border-radius:8px}"
    "h1{font-size:1.4rem;margin-top:0}button{font-size:1rem;padding:.6rem 1.4rem;border:0;border-radius:4px;"
    "background:#222;color:#fff;cursor:pointer}"
)


def _page(title: str, body: str) -> bytes:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<meta name="robots" content="noindex,nofollow"><title>{title}</title><style>{_STYLE}</style></head>'
        f"<body><main><h1>{title}</h1>{body}</main></body></html>\n"
    ).encode()


NOT_FOUND = _page("Link not found", "<p>This link is not valid or no longer exists.</p>")
CONFIRM_UNSUBSCRIBE = _page(
    "Unsubscribe",
    "<p>Press the button to stop receiving these messages.</p>"
    '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
    '<button type="submit">Unsubscribe</button></form>',
)
UNSUBSCRIBED = _page("You are unsubscribed", "<p>You will not receive these messages any more.</p>")
BAD_REQUEST = _page("Bad request", "<p>The request could not be understood.</p>")
TOO_LARGE = _page("Request too large", "<p>The request is too large.</p>")
NOT_ALLOWED = _page("Method not allowed", "<p>This address does not accept that request.</p>")
UNAVAILABLE = _page("Try again later", "<p>The service is busy. Please try again in a moment.</p>")
SERVER_ERROR = _page("Something went wrong", "<p>Please try again later.</p>")

STATUS_PAGES: dict[int, bytes] = {
    400: BAD_REQUEST,
    404: NOT_FOUND,
    405: NOT_ALLOWED,
    413: TOO_LARGE,
    431: TOO_LARGE,
    500: SERVER_ERROR,
    503: UNAVAILABLE,
}


def page_for(status: int) -> bytes:
    """The static page for an error status (500's page for any status without its own)."""
    return STATUS_PAGES.get(status, SERVER_ERROR)
