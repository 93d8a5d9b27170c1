"""The control API's token: calls that change routing or steering must carry it.

The controller listens on loopback by default; on top of that, SetPolicy,
SetFlowPath, Reload and ReportObservations need `authorization: Bearer <token>`.
The token comes from $FASTPATH_CONTROL_TOKEN, else from `control.token_file`
(created by the controller, mode 0600, on first start), so processes of the
same user on the same host share it and nobody else can steer.
"""
from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path
from typing import Any

import grpc

from fastpath.config import Config

ENV = "FASTPATH_CONTROL_TOKEN"
PROTECTED = frozenset({
    "/fastpath.v1.Control/SetPolicy",
    "/fastpath.v1.Control/SetFlowPath",
    "/fastpath.v1.Control/ReportObservations",
    "/fastpath.v1.Control/Reload",
})
_STREAMING_REQUEST = frozenset({"/fastpath.v1.Control/ReportObservations"})


def token_path(config: Config) -> Path:
    return Path(os.path.expanduser(config.control.token_file))


def read_token(config: Config) -> str:
    """The token clients send ("" when there is none yet)."""
    env = os.environ.get(ENV)
    if env:
        return env
    try:
        return token_path(config).read_text().strip()
    except OSError:
        return ""


def ensure_token(config: Config) -> str:
    """The controller's token: from the environment or the token file, created (0600) when missing."""
    token = read_token(config)
    if token:
        return token
    path = token_path(config)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another controller made it first: use that one
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses protected calls without the right bearer token (UNAUTHENTICATED, saying what to send)."""

    def __init__(self, token: str, where: str) -> None:
        self.expected = f"Bearer {token}".encode()
        self.where = where

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        method = details.method
        if method in PROTECTED:
            sent = next((v for k, v in details.invocation_metadata or () if k == "authorization"), "")
            if not hmac.compare_digest(sent.encode() if isinstance(sent, str) else sent, self.expected):
                message = (f"{method.rsplit('/', 1)[1]} changes routing or steering: send metadata "
                           f"'authorization: Bearer <token>' (the token is in {self.where} or ${ENV})")
                return _deny(method, message)
        return await continuation(details)


def _deny(method: str, message: str) -> grpc.RpcMethodHandler:
    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def stream(request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if method in _STREAMING_REQUEST:
        return grpc.stream_unary_rpc_method_handler(stream)
    return grpc.unary_unary_rpc_method_handler(unary)
