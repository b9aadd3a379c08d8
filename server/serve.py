"""Running the MCP server over stdio or streamable HTTP, with bearer-token protection off loopback."""

from __future__ import annotations

import hmac
import json
import os
from pathlib import Path
from typing import Any

from tiragent.errors import TirAgentError
from tiragent.server.app import build_server
from tiragent.server.backend import BackendConfig
from tiragent.server.config import ServerConfig, TransportConfig
from tiragent.server.pool import PoolConfig

TOKEN_ENV = "TIR_AGENT_TOKEN"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class BearerAuth:
    """ASGI middleware: HTTP requests must carry ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers", [])).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                body = json.dumps({"error": "unauthorized: send 'Authorization: Bearer <token>'"}).encode()
                await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def read_token(token_file: Path | None) -> str | None:
    """The bearer token from --token-file, else from $TIR_AGENT_TOKEN (never from the command line)."""
    if token_file is not None:
        token = Path(token_file).read_text().strip()
        if not token:
            raise TirAgentError(f"{token_file}: the token file is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


def http_app(
    config: ServerConfig, *, host: str, token: str | None, max_body_mb: float, pool_config: PoolConfig | None = None, backend: BackendConfig | None = None
) -> Any:
    """The Starlette app for streamable HTTP (at /mcp), wrapped in bearer auth when a token is set."""
    if host not in LOOPBACK and not token:
        raise TirAgentError(
            f"binding to {host} exposes the server beyond this machine: set a bearer token in ${TOKEN_ENV} or --token-file"
        )
    app = build_server(config, pool_config, backend).streamable_http_app(host=host, max_request_body_size=int(max_body_mb * 2**20))
    return BearerAuth(app, token) if token else app


def serve(config: ServerConfig, pool_config: PoolConfig, transport: TransportConfig, backend: BackendConfig | None = None) -> None:
    if backend is not None and backend.backend == "ray":  # fail before serving: Ray missing, or a bad deployments file
        from tiragent.server.ray_pool import import_ray, read_deployments

        import_ray()
        read_deployments(backend.deployments)
    if transport.transport == "stdio":
        build_server(config, pool_config, backend).run("stdio")
        return
    import uvicorn

    token = read_token(transport.token_file)
    app = http_app(config, host=transport.host, token=token, max_body_mb=transport.max_body_mb, pool_config=pool_config, backend=backend)
    uvicorn.run(app, host=transport.host, port=transport.port, log_level="warning")
