"""``LinkBook``: the (link key → destination) pairs one campaign's messages used (pure).

The renderer never looks a link up: ``add(url)`` derives the key from the URL itself. The
dispatcher saves what is new before sending the batch, in one statement::

    pairs = book.pending()
    if pairs:
        await save_links(conn, campaign_id, pairs)   # topslot.store.links
        book.mark_saved(pairs)

Memory stays bounded when templates build per-recipient URLs: the caches are cleared past
``max_entries`` (saving a pair twice is harmless: the store ignores known keys).
"""

from __future__ import annotations

from collections.abc import Iterable

from topslot.links.urls import link_key, normalise_url

DEFAULT_MAX_ENTRIES = 50_000


class LinkKeyCollision(RuntimeError):
    """Two different destinations hashed to the same 64-bit key in one campaign (never seen in practice)."""


class LinkBook:
    """Link keys used by one campaign; ``pending()`` are the pairs not yet saved."""

    __slots__ = ("campaign_id", "_max", "_by_url", "_saved", "_pending")

    def __init__(self, campaign_id: str, *, max_entries: int = DEFAULT_MAX_ENTRIES):
        self.campaign_id = campaign_id
        self._max = max_entries
        self._by_url: dict[str, tuple[str, str]] = {}  # url as given → (key, normalised url)
        self._saved: dict[str, str] = {}
        self._pending: dict[str, str] = {}

    def add(self, url: str) -> tuple[str, str]:
        """``(link key, normalised url)`` for ``url``, recorded for saving. ``InvalidLink`` if not http(s)."""
        found = self._by_url.get(url) if isinstance(url, str) else None
        if found is not None:
            return found
        normal = normalise_url(url)
        key = link_key(normal)
        known = self._pending.get(key) or self._saved.get(key)
        if known is None:
            self._pending[key] = normal
        elif known != normal:
            raise LinkKeyCollision(f"link key {key} names two destinations in campaign {self.campaign_id}")
        if len(self._by_url) >= self._max:
            self._by_url.clear()
        self._by_url[url] = (key, normal)
        return key, normal

    def pending(self) -> dict[str, str]:
        """A copy of the pairs added since they were last saved."""
        return dict(self._pending)

    def mark_saved(self, keys: Iterable[str]) -> None:
        """These keys are in the store now (call after the save committed)."""
        if len(self._saved) >= self._max:
            self._saved.clear()
        for key in keys:
            url = self._pending.pop(key, None)
            if url is not None:
                self._saved[key] = url

    def __len__(self) -> int:
        return len(self._pending) + len(self._saved)

    def __repr__(self) -> str:
        return f"LinkBook({self.campaign_id!r}, pending={len(self._pending)}, saved={len(self._saved)})"
