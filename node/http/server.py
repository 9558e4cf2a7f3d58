"""The HTTP server: uvicorn on a thread, started and stopped by the node's life cycle."""

from __future__ import annotations

import threading
from typing import Any

import uvicorn

from node.errors import ConfigError


class HttpServer:
    """uvicorn serving the HTTP app on a thread of this process (the node has its own lifespan)."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", lifespan="off", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="ainode-http", daemon=True)

    def start(self, timeout: float = 15.0) -> None:
        self._thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout / 0.02)):
            if self._server.started or not self._thread.is_alive():
                break
            deadline.wait(0.02)
        if not self._server.started:
            raise ConfigError("the HTTP API did not start (is the http_port already in use?)")

    @property
    def port(self) -> int:
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
