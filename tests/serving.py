"""A real server for the tests: uvicorn on a free loopback port, in a thread, and the
`openai` client and plain HTTP requests to talk to it."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

uvicorn = pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 (a socket bound first, so no port race); yields its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, http="h11", log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


def client(url: str, api_key: str = "not-needed", timeout: float = 60) -> Any:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0,
                         timeout=timeout)


def post(url: str, path: str, body: bytes | dict[str, Any] | None = None,
         headers: dict[str, str] | None = None, method: str = "POST"
         ) -> tuple[int, dict[str, str], Any]:
    """A plain HTTP request: (status, headers, JSON body or text)."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(f"{url}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, head, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        status, head, raw = e.code, dict(e.headers), e.read()
    text = raw.decode("utf-8")
    try:
        return status, head, json.loads(text)
    except ValueError:
        return status, head, text
