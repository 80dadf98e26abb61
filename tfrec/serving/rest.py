"""The REST front of the embedded server: TF Serving's ``/v1/models`` API on an asyncio HTTP/1.1 server.

Paths, JSON and status codes are TF Serving's (``http_rest_api_handler.cc``, ``json_tensor.cc``):
``GET /v1/models/{name}[/versions/{v}|/labels/{l}]`` (status) and ``.../metadata``, ``POST
...:predict`` (``instances`` rows or ``inputs`` columns), ``:regress`` and ``:classify``; errors
are ``{"error": "..."}`` with the HTTP status of their gRPC code (404, 400, 429, 503, 504...).
Besides, ``GET /healthz`` answers 200 while the server runs and ``GET /readyz`` 200 only once every
configured model has an AVAILABLE version (503 before, and while draining).

The connection handling holds against hostile clients: connections are served by one event loop
(an idle or half-sent request costs a socket, not a thread), the request head and body must arrive
within ``--rest_api_timeout_in_ms`` (408 otherwise), ``Content-Length`` must be a plain number
(400), a POST needs a length or chunked encoding (411), a body over the cap is refused unread
(413), and any answer given before the body was read closes the connection, so nothing left of
a request can be read as the next one.  Requests run on a pool of ``--rest_api_num_threads``.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from tfrec.serving.errors import ServingError
from tfrec.serving.rest_json import examples_of, predict_inputs, predict_json
from tfrec.serving.runner import CLASSIFY_METHOD, REGRESS_METHOD, Runner, Spec, model_metadata, model_status

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_HEAD_BYTES = 64 * 1024
MAX_CONNECTIONS = 1024
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           408: "Request Timeout", 409: "Conflict", 411: "Length Required", 413: "Payload Too Large",
           429: "Too Many Requests", 431: "Request Header Fields Too Large", 499: "Client Closed Request",
           500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable", 504: "Gateway Timeout"}

# TF Serving's REST paths (http_rest_api_util.cc), case-insensitive; digits are ASCII digits.
PREDICT_PATH = re.compile(r"/v1/models/([^/:]+)(?:/versions/([0-9]+)|/labels/([^/:]+))?:(classify|regress|predict)",
                          re.IGNORECASE)
STATUS_PATH = re.compile(r"/v1/models(?:/([^/:]+))?(?:/versions/([0-9]+)|/labels/([^/:]+))?(?:/(metadata))?",
                         re.IGNORECASE)
API_PATH = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)


class _HttpError(Exception):
    """A request the HTTP layer refuses before it reaches the API; the connection is closed after it."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------
# The API


def _json(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                      always_print_fields_with_no_presence=True)


class Api:
    """Answers one REST request: (HTTP status, JSON-able body); the part that runs on the worker pool."""

    def __init__(self, runner: Runner, timeout_ms: int):
        self.runner, self.timeout_ms = runner, timeout_ms

    def handle(self, method: str, path: str, body: bytes, deadline: float | None) -> tuple[int, dict, dict]:
        """(HTTP status, payload, {"model", "api", "code"}) for a request; never raises."""
        info = {"model": "", "api": "", "code": "OK"}
        try:
            return 200, self._dispatch(method, path, body, deadline, info), info
        except ServingError as e:
            info["code"] = e.code
            return e.http_status, {"error": str(e)}, info
        except Exception as e:  # never let a request kill the server
            info["code"] = "INTERNAL"
            return 500, {"error": f"{type(e).__name__}: {e}"}, info

    def _dispatch(self, method: str, path: str, body: bytes, deadline, info: dict) -> dict:
        malformed = ServingError("INVALID_ARGUMENT", f"Malformed request: {method} {path[:200]}")
        if method == "POST":
            m = PREDICT_PATH.fullmatch(path)
            if not m:
                raise malformed
            info["api"] = m[4].lower()
            name = info["model"] = _decode(m[1])
            return self._post(Spec(name, *self._spec_args(m[2], m[3])), info["api"], body, deadline)
        if method == "GET":
            m = STATUS_PATH.fullmatch(path)
            if not m:
                raise malformed
            if not m[1]:
                raise ServingError("INVALID_ARGUMENT", "Missing model name in request.")
            name = info["model"] = _decode(m[1])
            version, label = self._spec_args(m[2], m[3])
            if m[4]:
                response = model_metadata(self.runner, Spec(name, version, label))
                defs = get_model_metadata_pb2.SignatureDefMap()
                response.metadata["signature_def"].Unpack(defs)
                return {"model_spec": _json(response.model_spec), "metadata": {"signature_def": _json(defs)}}
            return _json(model_status(self.runner.manager, name, version))
        raise malformed

    @staticmethod
    def _spec_args(version: str | None, label: str | None) -> tuple:
        number = int(version) if version else None
        if number is not None and number >= 2**63:
            raise ServingError("INVALID_ARGUMENT", f"Failed to convert version: {version} to numeric.")
        label = _decode(label) if label else None
        if number is not None and label:
            raise ServingError("INVALID_ARGUMENT", f"Both model version ({number}) and model version label "
                                                   f"({label}) cannot be supplied.")
        return number, label

    def _post(self, spec: Spec, api: str, raw: bytes, deadline) -> dict:
        if not raw:
            raise ServingError("INVALID_ARGUMENT", "JSON Parse error: The document is empty")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise ServingError("INVALID_ARGUMENT", f"JSON Parse error: {e}") from None
        if not isinstance(body, dict):
            raise ServingError("INVALID_ARGUMENT", "JSON Value: the body Is not object")
        signature = body.get("signature_name", "")
        if not isinstance(signature, str):
            raise ServingError("INVALID_ARGUMENT", "'signature_name' key must be a string value.")
        spec = Spec(spec.name, spec.version, spec.label, signature)
        limits = self.runner.limits
        with self.runner.version(spec) as version:
            if api == "predict":
                info = version.signature_defs.get(spec.signature_name)
                if info is None:
                    raise ServingError("INVALID_ARGUMENT", f'Serving signature name: "{spec.signature_name}" '
                                                           "not found in signature def")
                inputs, fmt = predict_inputs(body, info.inputs, limits)
                return predict_json(self.runner.run(version, spec.signature_name, inputs, deadline=deadline), fmt)
            method = REGRESS_METHOD if api == "regress" else CLASSIFY_METHOD
            examples = examples_of(body, limits)
            values = self.runner.run_examples(version, spec.signature_name, method, examples, deadline)
        if api == "regress":
            return {"results": values.reshape(-1).tolist()}
        return {"results": [[[str(i), float(s)] for i, s in enumerate(row)]
                            for row in values.reshape(len(examples), -1)]}


def _decode(part: str) -> str:
    """A URL-encoded path part (TF Serving unescapes model names and labels)."""
    try:
        return urllib.parse.unquote(part, errors="strict") if "%" in part else part
    except UnicodeDecodeError:
        raise ServingError("INVALID_ARGUMENT", f"Failed to decode model name or label: {part[:100]}") from None


# ---------------------------------------------------------------------------
# HTTP/1.1 on asyncio


class RestServer:
    """TF Serving's REST API on `host`:`port` (0: a free port, read back from ``.port``)."""

    def __init__(self, runner: Runner, host: str, port: int, threads: int = 8, timeout_ms: int = 30000,
                 metrics_path: str | None = None, access=None, ready=lambda: True,
                 max_body_bytes: int | None = None, max_connections: int = MAX_CONNECTIONS):
        self.api = Api(runner, timeout_ms)
        self.runner, self.metrics_path, self.access, self.ready = runner, metrics_path, access, ready
        self.timeout = timeout_ms / 1000 if timeout_ms and timeout_ms > 0 else None
        self.max_body = max_body_bytes or MAX_BODY_BYTES
        self.max_connections = max_connections
        self.connections = 0
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="rest")
        self.sock = socket.create_server((host, port), reuse_port=False, backlog=1024)
        self.port = self.sock.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="rest-loop", daemon=True)
        self._server = None
        self._stopped = threading.Event()
        self._inflight = 0

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def serve():
            self._server = await asyncio.start_server(self._client, sock=self.sock, limit=MAX_HEAD_BYTES)

        self.loop.run_until_complete(serve())
        self.loop.run_forever()

    def stop(self, grace: float = 10.0) -> None:
        """Stops accepting, waits (up to `grace` s) for the requests being answered, then closes."""
        if self._server is not None:
            self.loop.call_soon_threadsafe(self._server.close)
        end = time.monotonic() + grace
        while self._inflight and time.monotonic() < end:
            time.sleep(0.02)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- one connection ------------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        peer = writer.get_extra_info("peername")
        peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        try:
            if self.connections > self.max_connections:
                await self._write(writer, 503, {"error": "too many open connections; retry later"}, close=True)
                return
            while True:
                try:
                    request = await self._read(reader)
                except _HttpError as e:
                    await self._write(writer, e.status, {"error": str(e)}, close=True)
                    return
                if request is None:
                    return
                method, path, headers, body, keep_alive, started = request
                self._inflight += 1
                try:
                    status, payload, text = await self._answer(method, path, headers, body, peer, started)
                finally:
                    self._inflight -= 1
                await self._write(writer, status, payload, close=not keep_alive, text=text,
                                  head_only=method == "HEAD")
                if not keep_alive or self._server is None or not self._server.is_serving():
                    return
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        except Exception:  # a connection's trouble never reaches the server
            pass
        finally:
            self.connections -= 1
            try:
                writer.close()
            except Exception:
                pass

    async def _read(self, reader: asyncio.StreamReader):
        """(method, path, headers, body, keep-alive, start time) of the next request; None when the client left."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.timeout)
        except asyncio.IncompleteReadError as e:
            if e.partial.strip():
                raise _HttpError(400, "the connection closed in the middle of a request") from None
            return None
        except asyncio.LimitOverrunError:
            raise _HttpError(431, f"the request head is over {MAX_HEAD_BYTES} bytes") from None
        except (asyncio.TimeoutError, TimeoutError):
            raise _HttpError(408, f"the request did not arrive within {self.timeout:g} s "
                                  "(--rest_api_timeout_in_ms)") from None
        started = time.perf_counter()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        try:
            lines = head[:-4].decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
        except ValueError:
            raise _HttpError(400, "the request line is not 'METHOD PATH HTTP/1.x'") from None
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise _HttpError(400, f"unsupported protocol {version[:20]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            key, sep, value = line.partition(":")
            if not sep or not key or key != key.strip():
                raise _HttpError(400, "a header line is malformed")
            key, value = key.lower(), value.strip()
            if key in headers and key in ("content-length", "transfer-encoding", "host"):
                raise _HttpError(400, f"the {key} header is given twice")
            headers[key] = value
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        body = await self._body(reader, method, headers, deadline)
        path = target.split("?", 1)[0]
        return method, path, headers, body, keep_alive, started

    async def _body(self, reader, method: str, headers: dict, deadline: float | None) -> bytes:
        remaining = None if deadline is None else max(0.001, deadline - time.monotonic())
        encoding = headers.get("transfer-encoding")
        length = headers.get("content-length")
        try:
            if encoding is not None:
                if encoding.lower() != "chunked" or length is not None:
                    raise _HttpError(400, "only 'Transfer-Encoding: chunked' without Content-Length is accepted")
                return await asyncio.wait_for(self._chunked(reader), remaining)
            if length is None:
                if method == "POST":
                    raise _HttpError(411, "a POST needs a Content-Length header (or chunked encoding)")
                return b""
            if not length.isascii() or not length.isdigit():
                raise _HttpError(400, f"Content-Length {length[:20]!r} is not a number of bytes")
            n = int(length)
            if n > self.max_body:
                raise _HttpError(413, f"the body of {n} bytes is over the {self.max_body} allowed")
            return await asyncio.wait_for(reader.readexactly(n), remaining) if n else b""
        except (asyncio.TimeoutError, TimeoutError):
            raise _HttpError(408, f"the request body did not arrive within {self.timeout:g} s "
                                  "(--rest_api_timeout_in_ms)") from None
        except asyncio.IncompleteReadError:
            raise _HttpError(400, "the connection closed before the whole body arrived") from None

    async def _chunked(self, reader) -> bytes:
        parts, total = [], 0
        while True:
            line = await reader.readuntil(b"\r\n")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _HttpError(400, "a chunk size is not a hexadecimal number") from None
            if size < 0:
                raise _HttpError(400, "a chunk size is negative")
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return b"".join(parts)
            total += size
            if total > self.max_body:
                raise _HttpError(413, f"the body is over the {self.max_body} bytes allowed")
            parts.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise _HttpError(400, "a chunk does not end with CRLF")

    async def _answer(self, method: str, path: str, headers: dict, body: bytes, peer: str, started: float):
        """(status, payload, plain text or None) for a request whose head and body were read."""
        info = {"model": "", "api": "", "code": "OK"}
        try:
            if method in ("GET", "HEAD") and path == "/healthz":
                return 200, {"status": "alive"}, None
            if method in ("GET", "HEAD") and path == "/readyz":
                ready = self.ready()
                return (200 if ready else 503), {"status": "ready" if ready else "not ready"}, None
            if self.metrics_path and method == "GET" and path == self.metrics_path:
                return 200, None, self.runner.metrics.render()
            if not API_PATH.fullmatch(path):
                return 404, {"error": f"no such path {path[:200]!r}; the API is under /v1/models"}, None
            if method == "OPTIONS":
                if re.search(r"https?://", headers.get("origin", "")):
                    return 200, {}, None
                return 400, {"error": "Origin header is missing in CORS preflight"}, None
            deadline = None if self.timeout is None else time.monotonic() + self.timeout
            status, payload, info = await asyncio.get_running_loop().run_in_executor(
                self.pool, self.api.handle, method, path, body, deadline)
            return status, payload, None
        finally:
            if info["api"]:
                self.runner.observe(info["model"], info["api"], "REST", started, info["code"])
            if self.access is not None:
                self.access.write("rest", peer, f"{method} {path[:200]}", info["model"], info["code"],
                                  time.perf_counter() - started)

    async def _write(self, writer, status: int, payload, close: bool, text: str | None = None,
                     head_only: bool = False) -> None:
        if text is not None:
            data, kind = text.encode(), "text/plain; version=0.0.4"
        else:
            data, kind = json.dumps(payload).encode(), "application/json"
        head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(data)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n")
        writer.write(head.encode() + (b"" if head_only else data))
        try:
            await asyncio.wait_for(writer.drain(), self.timeout)
        except (asyncio.TimeoutError, TimeoutError):
            writer.transport.abort()

