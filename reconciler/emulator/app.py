"""The emulator's HTTP application: routing, auth, error bodies, faults, the request log, admin.

One `EmulatorApp` serves both the in-process `requests` adapter (`adapter.py`) and the threaded
HTTP server (`server.py`): each hands it a `Request` and writes back the `Response`. Paths are
matched on the raw path with only percent-escapes decoded, so a `+` in a phone number stays a `+`.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from .faults import Fault, number
from .persistence import DataFileError
from .store import ApiFault, Store

PREFIXES = ("/api/conversational-ai-agent/v2/", "/cn/api/conversational-ai-agent/v2/")
ADMIN_PREFIX = "/_emulator/"


@dataclass
class Request:
    method: str
    target: str  # path plus optional ?query, as sent on the wire
    headers: dict[str, str]
    body: bytes = b""
    connection: int | None = None  # the server's id of the connection it came on (None in process)

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # executed, but the connection is closed before the answer is sent
    entry: dict[str, Any] | None = None  # its line in the request log

    @classmethod
    def json(cls, status: int, doc: Any, headers: dict[str, str] | None = None) -> Response:
        return cls(status, json.dumps(doc).encode(), {"Content-Type": "application/json", **(headers or {})})


def decode_json(raw: bytes, *, telephony: bool) -> Any:
    """A request body as JSON (empty = `{}`), or a 400 in the endpoint's error vocabulary."""
    if not raw:
        return {}
    code = "invalid_request_body" if telephony else "InvalidRequestBody"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiFault(400, code, f"the body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiFault(400, code, f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ApiFault(400, code, "the body is nested too deeply") from None


class EmulatorApp:
    """The application object. `handle()` is thread-safe."""

    def __init__(
        self,
        store: Store | None = None,
        *,
        customer_id: str = "demo",
        customer_secret: str = "demo",
        auth_tokens: set[str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store or Store()
        self.customer_id = customer_id
        self.customer_secret = customer_secret
        self.auth_tokens = auth_tokens  # None: any non-empty token is accepted
        self.sleep = sleep
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)  # `hold` faults: parked calls wait on it
        self._held = 0  # calls parked by a `hold` fault right now
        self._release_generation = 0  # bumped by every release: a parked call goes when it moves
        self.faults: list[Fault] = []
        self.requests: list[dict[str, Any]] = []
        self._random = random.Random()
        self._connections: set[int] = set()  # ids of the client connections the server has open
        self._next_connection = 0

    # ----------------------------------------------------------------- connections
    def connection_opened(self) -> int:
        """Register a client connection the server accepted; returns its id."""
        with self._lock:
            self._next_connection += 1
            self._connections.add(self._next_connection)
            return self._next_connection

    def connection_closed(self, connection: int) -> None:
        with self._lock:
            self._connections.discard(connection)

    # ----------------------------------------------------------------- entry point
    def handle(self, request: Request) -> Response:
        path, _, query_string = request.target.partition("?")
        path = unquote(path)
        query = dict(parse_qsl(query_string, keep_blank_values=True))
        if path.startswith(ADMIN_PREFIX):
            return self._guard(lambda: self._admin(request.method, path[len(ADMIN_PREFIX) :], request), telephony=True)
        telephony = "/phone-numbers" in path or "/call" in path
        fault = self._take_fault(request.method, path)
        if fault is not None and fault.body is not None:
            response = Response.json(fault.status or 200, fault.body)
        elif fault is not None and fault.status and not fault.drop:
            response = self._fault_response(fault, path, request.body)
        else:
            response = self._guard(lambda: self._api(request, path, query), telephony=telephony)
            if fault is not None and fault.drop:
                response.drop = True
        response.entry = self._log(request.method, path, query_string, response.status, dropped=response.drop)
        return response

    def _api(self, request: Request, path: str, query: dict[str, str]) -> Response:
        prefix = next((p for p in PREFIXES if path.startswith(p)), None)
        telephony = "/phone-numbers" in path or "/call" in path
        if prefix is None:
            return self._error(404, "NotFound", f"no route for {path}", telephony)
        denied = self._check_auth(request.header("Authorization"))
        if denied:
            return self._error(401, "unauthorized" if telephony else "InvalidPermission", denied, telephony)
        parts = [p for p in path[len(prefix) :].split("/") if p != ""]
        return self._route(request, parts, query, telephony)

    def _guard(self, fn: Callable[[], Response], *, telephony: bool) -> Response:
        """Run one request in a store session; every failure becomes a JSON error, never a traceback."""
        try:
            with self.store.session():
                return fn()
        except ApiFault as fault:
            return self._error(fault.status, fault.code, fault.message, telephony)
        except DataFileError as exc:
            return self._error(503, "service_unavailable" if telephony else "ServiceUnavailable", f"emulator data file: {exc}", telephony)
        except Exception as exc:  # noqa: BLE001 -- an emulator bug must still answer, in JSON
            sys.stderr.write(f"emulator: internal error: {type(exc).__name__}: {exc}\n")
            code = "internal_server_error" if telephony else "InternalError"
            return self._error(500, code, f"emulator internal error: {type(exc).__name__}", telephony)

    # ----------------------------------------------------------------- auth
    def _check_auth(self, header: str | None) -> str | None:
        """None when the credentials are good, else why not."""
        if not header or not header.strip():
            return "missing Authorization header"
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return "malformed Basic credentials"
            cid, _, secret = decoded.partition(":")
            if cid == self.customer_id and secret == self.customer_secret:
                return None
            return "invalid customer id or secret"
        if scheme.lower() == "agora" and value.startswith("token="):
            token = value[len("token=") :].strip().strip('"')
            if token and (self.auth_tokens is None or token in self.auth_tokens):
                return None
            return "invalid token"
        return "unsupported Authorization scheme"

    # ----------------------------------------------------------------- routing
    def _route(self, request: Request, parts: list[str], query: dict[str, str], telephony: bool) -> Response:
        method, s = request.method, self.store

        def body() -> Any:
            return decode_json(request.body, telephony=telephony)

        if parts and parts[0] == "phone-numbers":
            if len(parts) == 1 and method == "GET":
                return Response.json(200, s.list_numbers())
            if len(parts) == 1 and method == "POST":
                return Response.json(201, s.add_number(body()))
            if len(parts) == 2:
                number = parts[1]
                if method == "GET":
                    return Response.json(200, s.get_number(number))
                if method == "PATCH":
                    return Response.json(200, s.update_number(number, body()))
                if method == "DELETE":
                    s.delete_number(number)
                    return Response(204)
            raise ApiFault(405, "method_not_allowed", f"{method} is not allowed here")
        if len(parts) >= 3 and parts[0] == "projects":
            app_id, rest = parts[1], parts[2:]
            if rest == ["join"] and method == "POST":
                return Response.json(200, s.join(app_id, body()))
            if rest == ["agents"] and method == "GET":
                return Response.json(200, s.list_agents(app_id, query))
            if rest[0] == "agents" and len(rest) == 2 and method == "GET":
                return Response.json(200, s.get_agent(app_id, rest[1]))
            if rest[0] == "agents" and len(rest) == 3:
                return self._agent_action(method, app_id, rest[1], rest[2], body, query)
            if rest == ["call"] and method == "POST":
                return Response.json(200, s.call(app_id, body()))
            if rest == ["call"] and method == "GET":
                return Response.json(200, s.list_calls(app_id, query))
            if rest[0] == "calls" and len(rest) == 2 and method == "GET":
                return Response.json(200, s.get_call(app_id, rest[1]))
            if rest[0] == "calls" and len(rest) == 3 and rest[2] == "hangup" and method == "POST":
                return Response.json(200, s.hangup(app_id, rest[1]))
        raise ApiFault(404, "NotFound", f"no route for {method} /{'/'.join(parts)}")

    def _agent_action(
        self, method: str, app_id: str, agent_id: str, action: str, body: Callable[[], Any], query: dict[str, str]
    ) -> Response:
        s = self.store
        if method == "POST":
            if action == "leave":
                s.leave(app_id, agent_id)
                return Response(200)
            if action == "update":
                return Response.json(200, s.update_agent(app_id, agent_id, body()))
            if action == "speak":
                return Response.json(200, s.speak(app_id, agent_id, body()))
            if action == "interrupt":
                return Response.json(200, s.interrupt(app_id, agent_id))
            if action == "think":
                return Response.json(200, s.think(app_id, agent_id, body()))
        if method == "GET":
            if action == "history":
                return Response.json(200, s.history(app_id, agent_id))
            if action == "turns":
                return Response.json(200, s.turns(app_id, agent_id, query))
        raise ApiFault(404, "NotFound", f"no route for {method} agents/{agent_id}/{action}")

    # ----------------------------------------------------------------- errors
    @staticmethod
    def _error(status: int, code: str, message: str, telephony: bool) -> Response:
        if telephony:
            return Response.json(status, {"error_type": code, "description": message})
        return Response.json(status, {"detail": message, "reason": code})

    def _fault_response(self, fault: Fault, path: str, body: bytes = b"") -> Response:
        status = fault.status or 500
        telephony = "/phone-numbers" in path or "/call" in path
        codes = {429: ("too_many_requests", "ResourceQuotaLimitExceeded"), 503: ("service_unavailable", "ServiceUnavailable")}
        code = codes.get(status, ("internal_server_error", "InternalError"))[0 if telephony else 1]
        message = f"injected fault: HTTP {status}"
        if fault.echo_body:
            message += f"; request was: {body.decode(errors='replace')[:2000]}"
        response = self._error(status, code, message, telephony)
        if fault.retry_after is not None:
            response.headers["Retry-After"] = f"{fault.retry_after:g}"
        return response

    # ----------------------------------------------------------------- faults
    def _take_fault(self, method: str, path: str) -> Fault | None:
        """Park the call on a `hold`, apply latency and pick the fault for this call (consuming one `count`)."""
        self._hold(method, path)
        delay = 0.0
        chosen = None
        with self._lock:
            for fault in list(self.faults):
                if fault.hold or not fault.matches(method, path):
                    continue
                if fault.is_global_latency:
                    delay += fault.latency_ms / 1000
                    continue
                if chosen is not None:
                    continue
                if fault.rate is not None:
                    if self._random.random() < fault.rate:
                        chosen = fault
                    continue
                if fault.count is not None and fault.count > 0:
                    fault.count -= 1
                    delay += fault.latency_ms / 1000
                    chosen = fault
                    if fault.count == 0:
                        self.faults.remove(fault)
        if delay:
            self.sleep(delay)
        return chosen

    def _hold(self, method: str, path: str) -> None:
        """Wait here while the first matching `hold` fault parks this call (until the next release)."""
        with self._released:
            rule = next((f for f in self.faults if f.hold and f.count != 0 and f.matches(method, path)), None)
            if rule is None:
                return
            if rule.count is not None:
                rule.count -= 1
                if rule.count <= 0:
                    self.faults.remove(rule)
            generation = self._release_generation
            self._held += 1
            try:
                while self._release_generation == generation:
                    self._released.wait()
            finally:
                self._held -= 1

    def release_held(self) -> int:
        """Let every parked call go on (hold rules stay until deleted); returns how many were parked."""
        with self._released:
            released = self._held
            self._release_generation += 1
            self._released.notify_all()
            return released

    def _log(self, method: str, path: str, query: str, status: int, *, dropped: bool) -> dict[str, Any]:
        entry: dict[str, Any] = {"method": method, "path": path, "query": query, "status": status, "ts": time.time()}
        if dropped:
            entry["dropped"] = True
        with self._lock:
            self.requests.append(entry)
        return entry

    def client_gone(self, response: Response) -> None:
        """Note in the request log that the client hung up before reading the answer."""
        if response.entry is not None:
            with self._lock:
                response.entry["client_gone"] = True

    # ----------------------------------------------------------------- admin
    def _admin(self, method: str, route: str, request: Request) -> Response:
        doc: Any = decode_json(request.body, telephony=True)
        if route == "health" and method == "GET":
            return Response.json(200, {"ok": True})
        if route == "reset" and method == "POST":
            self.store.reset()
            with self._lock:
                self.requests.clear()
                self.faults.clear()
            self.release_held()
            return Response.json(200, {"ok": True})
        if route == "requests" and method == "GET":
            with self._lock:
                return Response.json(200, {"requests": list(self.requests)})
        if route == "requests" and method == "DELETE":
            with self._lock:
                self.requests.clear()
            return Response.json(200, {"ok": True})
        if route == "faults" and method == "POST":
            rules = doc if isinstance(doc, list) else [doc]
            parsed = [Fault.parse(rule) for rule in rules]
            with self._lock:
                self.faults.extend(parsed)
            return Response.json(200, {"ok": True, "faults": len(self.faults)})
        if route == "connections" and method == "GET":
            with self._lock:
                others = sorted(self._connections - {request.connection} if request.connection is not None else self._connections)
            return Response.json(200, {"open": others, "asking": request.connection})
        if route == "faults/held" and method == "GET":
            with self._lock:
                return Response.json(200, {"held": self._held})
        if route == "faults/release" and method == "POST":
            return Response.json(200, {"ok": True, "released": self.release_held()})
        if route == "faults" and method == "DELETE":
            with self._lock:
                self.faults.clear()
            return Response.json(200, {"ok": True})
        if route == "clock" and method == "POST":
            if not isinstance(doc, dict) or set(doc) - {"advance_s"}:
                raise ApiFault(400, "invalid_field", 'clock expects {"advance_s": <seconds>}')
            return Response.json(200, {"now": self.store.advance_clock(number(doc, "advance_s") or 0.0)})
        if route == "clock" and method == "GET":
            return Response.json(200, {"now": self.store.now()})
        if route == "seed" and method == "POST":
            return Response.json(200, self.store.seed(doc))
        if route == "config" and method == "POST":
            return Response.json(200, self.store.configure(doc))
        if route == "config" and method == "GET":
            with self.store.lock:
                return Response.json(200, self.store.settings.public())
        if route == "channels" and method == "POST":
            return Response.json(200, self.store.set_remote_users(doc))
        match = re.fullmatch(r"agents/([^/]+)/crash", route)
        if match and method == "POST":
            return Response.json(200, self.store.crash(match.group(1)))
        raise ApiFault(404, "not_found", f"no admin route {method} /_emulator/{route}")
