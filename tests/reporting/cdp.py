"""A tiny Chrome DevTools Protocol client (aiohttp's websocket, already a dependency) for layout
checks that ``--dump-dom`` cannot make: headless Chromium with ``--remote-debugging-port=0`` in its
own profile directory, one page, every wait bounded, the process always killed."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

STARTUP_SECONDS = 30  # until Chromium writes DevToolsActivePort
CALL_SECONDS = 30  # any one protocol call


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """The result of ``method``; events in between are skipped; a protocol error raises."""
        call_id = next(self._ids)
        await self._ws.send_json({"id": call_id, "method": method, "params": params})
        deadline = time.monotonic() + CALL_SECONDS
        while True:
            message = await asyncio.wait_for(self._ws.receive(), max(0.1, deadline - time.monotonic()))
            if message.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"DevTools connection ended during {method}: {message.type!r}")
            data = json.loads(message.data)
            if data.get("id") == call_id:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                result: dict[str, Any] = data["result"]
                return result

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (returned by value: JSON-able)."""
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def open(self, url: str, width: int, height: int, *, mobile: bool) -> None:
        """``url`` laid out at ``width`` CSS pixels (``mobile``: as a phone, honouring the viewport
        meta), once it has loaded."""
        await self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                        mobile=mobile)  # fmt: skip
        await self.call("Page.navigate", url=url)
        deadline = time.monotonic() + CALL_SECONDS
        while await self.evaluate("document.readyState") != "complete":
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not finish loading")
            await asyncio.sleep(0.05)

    async def screenshot(self, path: Path, height: int) -> None:
        """The top ``height`` CSS pixels of the page (beyond the viewport too) as a PNG."""
        width = await self.evaluate("window.innerWidth")
        clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
        shot = await self.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))


@asynccontextmanager
async def chromium_page(chromium: Path, flags: list[str], profile: Path) -> AsyncIterator[Page]:
    """A page of a headless Chromium of its own (profile in ``profile``), killed on the way out."""
    command = [str(chromium), *flags, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"]
    (profile / "DevToolsActivePort").unlink(missing_ok=True)  # a stale one names another browser's port
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port = await _devtools_port(profile / "DevToolsActivePort", process)
        url = await _page_socket(port)
        timeout = aiohttp.ClientTimeout(total=None, connect=CALL_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.ws_connect(url, max_msg_size=0) as ws:
                yield Page(ws)
    finally:
        process.kill()
        process.wait(timeout=CALL_SECONDS)


async def _devtools_port(active_port: Path, process: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode} before DevTools was up")
        lines = active_port.read_text().splitlines() if active_port.exists() else []
        if lines and lines[0].isdigit():
            return int(lines[0])
        await asyncio.sleep(0.1)
    raise TimeoutError(f"chromium did not write {active_port} within {STARTUP_SECONDS} s")


async def _page_socket(port: int) -> str:
    """The websocket of the browser's first page (listed a moment after DevTools is up)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        try:
            targets = await asyncio.to_thread(_json, f"http://127.0.0.1:{port}/json/list")
        except OSError:  # not listening yet
            targets = []
        pages = [t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"]
        if pages:
            return str(pages[0])
        if time.monotonic() > deadline:
            raise TimeoutError("chromium lists no page")
        await asyncio.sleep(0.1)


def _json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=CALL_SECONDS) as response:  # noqa: S310 (localhost DevTools)
        return json.loads(response.read())
