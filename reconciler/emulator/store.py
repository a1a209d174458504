"""The emulator's data and business rules: pipelines, phone numbers, agents, calls, the clock.

Owns everything the Agora API would remember and every rule it enforces (validation, name
reuse, the agent lifecycle against the emulator clock). It knows nothing about HTTP: the
application in `app.py` turns requests into calls here and `ApiFault`s into error bodies.
Imports nothing from the rest of `reconciler/`, so a client bug is never mirrored here.
"""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import string
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import variants as v

E164 = re.compile(r"\+[1-9][0-9]{1,14}")  # always with fullmatch: `$` would accept a trailing newline
STATUS_CODES = {
    "IDLE": 0,
    "STARTING": 1,
    "RUNNING": 2,
    "STOPPING": 3,
    "STOPPED": 4,
    "RECOVERING": 5,
    "FAILED": 6,
}
LIVE_STATUSES = ("STARTING", "RUNNING", "RECOVERING")
MAX_RUNTIME_S = 72 * 3600
DEFAULT_IDLE_TIMEOUT_S = 30
DEMO_PIPELINES = {"pl_demo_support": "Support desk", "pl_demo_sales": "Sales line"}
REQUIRED_PROPERTIES = ("channel", "token", "agent_rtc_uid", "remote_rtc_uids")
UPDATABLE = {"token": None, "llm": {"system_messages", "params"}, "mllm": {"params"}}
_ID_ALPHABET = string.ascii_uppercase + string.digits


class ApiFault(Exception):
    """An API error: the HTTP status plus a code and a message; `app.py` picks the body shape."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Settings:
    """Tunable behaviour (admin `POST /_emulator/config`, `emulator serve` options)."""

    stop_delay_s: float = 0.5
    start_delay_s: float = 0.0
    retention_s: float = 7 * 24 * 3600
    name_reuse: str = "strict"  # strict: any earlier name conflicts; lenient: only live ones
    variants: tuple[str, ...] = ()  # see variants.py
    app_certificate: str = ""  # when set, RTC tokens on join and update are verified

    def update(self, values: Any) -> None:
        """Validate every value first, then apply them all (a bad document changes nothing)."""
        if not isinstance(values, dict):
            raise ApiFault(400, "invalid_request_body", "config expects a JSON object")
        checked = {key: self._check(key, value) for key, value in values.items()}
        for key, value in checked.items():
            setattr(self, key, value)

    def _check(self, key: str, value: Any) -> Any:
        if key not in self.__dataclass_fields__:
            raise ApiFault(400, "invalid_field", f"unknown setting {key!r} (known: {', '.join(self.__dataclass_fields__)})")
        if key == "variants":
            try:
                return v.parse_variants(value)
            except ValueError as exc:
                raise ApiFault(400, "invalid_field", str(exc)) from None
        if key == "name_reuse":
            if value not in ("strict", "lenient"):
                raise ApiFault(400, "invalid_field", "name_reuse must be 'strict' or 'lenient'")
            return value
        if key == "app_certificate":
            if not isinstance(value, str):
                raise ApiFault(400, "invalid_field", "app_certificate must be a string ('' turns verification off)")
            return value.strip()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e12:
            raise ApiFault(400, "invalid_field", f"{key} must be a non-negative number of seconds")
        return float(value)

    def public(self) -> dict[str, Any]:
        """The settings as `GET /_emulator/config` shows them (the certificate is never echoed)."""
        doc = dict(self.__dict__)
        doc["variants"] = list(self.variants)
        doc["app_certificate"] = bool(self.app_certificate)
        return doc


@dataclass
class Agent:
    agent_id: str
    app_id: str
    name: str
    properties: dict[str, Any]
    preset: str | None
    pipeline_id: str | None
    create_ts: float
    start_ts: float
    status: str = "STARTING"
    stop_ts: float = 0
    message: str = ""
    stop_requested_at: float | None = None
    contents: list[dict[str, Any]] = field(default_factory=list)

    @property
    def channel(self) -> str:
        return str(self.properties.get("channel", ""))


@dataclass
class Call:
    agent_id: str
    app_id: str
    to_number: str
    from_number: str
    pipeline_id: str | None
    type: str
    channel: str
    create_ts: float
    state: str = "answered"
    stop_ts: float = 0
    reason: str | None = None


def _new_agent_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def _strip_password(address: str) -> str:
    """`user:pass@host` -> `user@host`: SIP passwords are write-only."""
    if "@" not in address:
        return address
    userinfo, host = address.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    return f"{user}@{host}"


class Store:
    """All emulator state behind one lock. Every public method is atomic."""

    def __init__(self, data_file: str | os.PathLike[str] | None = None) -> None:
        self.lock = threading.RLock()
        self.defaults = Settings()  # what `reset` returns to (the `serve` options)
        self.settings = Settings()
        self.data_file = Path(data_file) if data_file else None
        self.clock_offset = 0.0
        self._empty()
        if self.data_file and self.data_file.exists():
            self._load()

    # ----------------------------------------------------------------- housekeeping
    def _empty(self) -> None:
        self.pipelines: dict[str, str] = dict(DEMO_PIPELINES)
        self.numbers: dict[str, dict[str, Any]] = {}
        self.agents: dict[str, Agent] = {}
        self.calls: dict[str, Call] = {}
        self.used_names: dict[str, set[str]] = {}
        self.quiet_channels: set[tuple[str, str]] = set()  # (app_id, channel) without remote users
        self.conflicted: set[tuple[str, str]] = set()  # (operation, number) already refused by conflict-409

    def reset(self) -> None:
        with self.lock:
            self._empty()
            self.clock_offset = 0.0
            self.settings = copy.copy(self.defaults)
            self.persist()

    def set_defaults(self, values: dict[str, Any]) -> None:
        """Apply settings now and keep them across `reset` (the `emulator serve` options)."""
        with self.lock:
            self.settings.update(values)
            self.defaults.update(values)

    def configure(self, values: Any) -> dict[str, Any]:
        """`POST /_emulator/config`: change settings until the next reset."""
        with self.lock:
            before = self.settings.variants
            self.settings.update(values)
            if self.settings.variants != before:
                self.conflicted.clear()
            return self.settings.public()

    def has(self, variant: str) -> bool:
        return variant in self.settings.variants

    def set_remote_users(self, doc: Any) -> dict[str, Any]:
        """`POST /_emulator/channels`: mark a channel as having remote users or not (`idle-status`)."""
        if not isinstance(doc, dict):
            raise ApiFault(400, "invalid_request_body", "channels expects a JSON object")
        app_id, channel, present = doc.get("app_id"), doc.get("channel"), doc.get("remote_users")
        if not isinstance(app_id, str) or not app_id or not isinstance(channel, str) or not channel:
            raise ApiFault(400, "invalid_field", "app_id and channel must be non-empty strings")
        if not isinstance(present, bool):
            raise ApiFault(400, "invalid_field", "remote_users must be true or false")
        with self.lock:
            if present:
                self.quiet_channels.discard((app_id, channel))
            else:
                self.quiet_channels.add((app_id, channel))
            self.persist()
            return {"app_id": app_id, "channel": channel, "remote_users": present}

    def _conflict(self, operation: str, number: str) -> None:
        """`conflict-409`: refuse the first `operation` on `number`, let the next one through."""
        if self.has("conflict-409") and (operation, number) not in self.conflicted:
            self.conflicted.add((operation, number))
            raise ApiFault(409, "conflict", v.CONFLICT_MESSAGE)

    def now(self) -> float:
        return time.time() + self.clock_offset

    def advance_clock(self, seconds: float) -> float:
        with self.lock:
            self.clock_offset += float(seconds)
            self.persist()
            return self.now()

    def persist(self) -> None:
        """Write the store to `data_file` atomically (temp file, fsync, rename)."""
        if not self.data_file:
            return
        with self.lock:
            doc = {
                "version": 1,
                "clock_offset": self.clock_offset,
                "pipelines": self.pipelines,
                "numbers": self.numbers,
                "agents": [a.__dict__ for a in self.agents.values()],
                "calls": [c.__dict__ for c in self.calls.values()],
                "used_names": {k: sorted(names) for k, names in self.used_names.items()},
                "quiet_channels": sorted([a, c] for a, c in self.quiet_channels),
            }
            self.data_file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".emulator-", dir=self.data_file.parent)
            try:
                with os.fdopen(fd, "w") as fh:
                    json.dump(doc, fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.data_file)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise

    def _load(self) -> None:
        assert self.data_file is not None
        doc = json.loads(self.data_file.read_text())
        self.clock_offset = float(doc.get("clock_offset", 0.0))
        self.pipelines = dict(doc.get("pipelines", DEMO_PIPELINES))
        self.numbers = dict(doc.get("numbers", {}))
        self.agents = {a["agent_id"]: Agent(**a) for a in doc.get("agents", [])}
        self.calls = {c["agent_id"]: Call(**c) for c in doc.get("calls", [])}
        self.used_names = {k: set(names) for k, names in doc.get("used_names", {}).items()}
        self.quiet_channels = {(str(a), str(c)) for a, c in doc.get("quiet_channels", [])}

    # ----------------------------------------------------------------- pipelines
    def pipeline_view(self, pipeline_id: str | None) -> dict[str, str] | None:
        if not pipeline_id:
            return None
        return {"pipeline_id": pipeline_id, "pipeline_name": self.pipelines.get(pipeline_id, "")}

    def _check_pipeline(self, pipeline_id: Any) -> str | None:
        if pipeline_id is None:
            return None
        if not isinstance(pipeline_id, str) or pipeline_id not in self.pipelines:
            raise ApiFault(404, v.not_found_code("pipeline_not_found", self.settings.variants), f"pipeline {pipeline_id!r} does not exist")
        return pipeline_id

    # ----------------------------------------------------------------- phone numbers
    def number_view(self, rec: dict[str, Any]) -> dict[str, Any]:
        inbound = dict(rec.get("inbound_config") or {})
        outbound = dict(rec.get("outbound_config") or {})
        outbound.pop("password", None)
        if isinstance(outbound.get("address"), str):
            outbound["address"] = _strip_password(outbound["address"])
        inbound["pipeline_id"] = rec.get("inbound_pipeline_id")
        outbound["pipeline_id"] = rec.get("outbound_pipeline_id")
        bound = rec.get("inbound_pipeline_id") or rec.get("outbound_pipeline_id")
        view = {
            "provider": rec["provider"],
            "phone_number": rec["phone_number"],
            "label": rec["label"],
            "inbound": rec["inbound"],
            "outbound": rec["outbound"],
            "associated_pipeline": self.pipeline_view(bound),
            "inbound_config": inbound,
            "outbound_config": outbound,
        }
        return v.phone_number_view(view, rec, self.settings.variants)

    def list_numbers(self) -> list[dict[str, Any]]:
        with self.lock:
            return [self.number_view(r) for r in self.numbers.values()]

    def get_number(self, number: str) -> dict[str, Any]:
        with self.lock:
            return self.number_view(self._number(number))

    def _number(self, number: str) -> dict[str, Any]:
        rec = self.numbers.get(number)
        if rec is None:
            raise ApiFault(
                404, v.not_found_code("phone_number_not_found", self.settings.variants), f"phone number {number} is not imported"
            )
        return rec

    def add_number(self, body: Any, *, seeded: bool = False) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiFault(400, "invalid_request_body", "the body must be a JSON object")
        required = ("provider", "phone_number", "label", "inbound_config", "outbound_config")
        missing = [k for k in required if body.get(k) is None]
        if missing:
            raise ApiFault(422, "unprocessable_content", f"missing required field(s): {', '.join(missing)}")
        number = body["phone_number"]
        if not isinstance(number, str) or not E164.fullmatch(number):
            raise ApiFault(400, "invalid_phone_format", f"{number!r} is not an E.164 phone number")
        if body["provider"] not in ("byo", "twilio"):
            raise ApiFault(422, "unprocessable_content", "provider must be 'byo' or 'twilio'")
        for key in ("inbound_config", "outbound_config"):
            if not isinstance(body[key], dict):
                raise ApiFault(422, "unprocessable_content", f"{key} must be an object")
        bindings = {}
        for key in ("inbound_config", "outbound_config"):
            if "pipeline_id" in body[key]:
                if not seeded:
                    raise ApiFault(400, "invalid_field", f"{key}.pipeline_id can only be set with PATCH")
                bindings[key] = body[key]["pipeline_id"]
        unknown = set(body) - set(required) - {"inbound", "outbound", "associated_pipeline"}
        if unknown:
            raise ApiFault(422, "unprocessable_content", f"unknown field(s): {', '.join(sorted(unknown))}")
        with self.lock:
            if number in self.numbers:
                raise ApiFault(409, "phone_number_exists", f"phone number {number} is already imported")
            if not seeded:
                self._conflict("add", number)
            for value in bindings.values():
                if value is not None:
                    self.pipelines.setdefault(value, value)
            rec = {
                "provider": body["provider"],
                "phone_number": number,
                "label": str(body["label"]),
                "inbound": bool(body.get("inbound", True)),
                "outbound": bool(body.get("outbound", True)),
                "inbound_config": {k: val for k, val in body["inbound_config"].items() if k != "pipeline_id"},
                "outbound_config": {k: val for k, val in body["outbound_config"].items() if k != "pipeline_id"},
                "inbound_pipeline_id": bindings.get("inbound_config"),
                "outbound_pipeline_id": bindings.get("outbound_config"),
                "created_ts": self.now(),
                "updated_ts": self.now(),
            }
            self.numbers[number] = rec
            view = self.number_view(rec)
            if not seeded:
                self.persist()
            return view

    def update_number(self, number: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiFault(400, "invalid_request_body", "the body must be a JSON object")
        extra = set(body) - {"inbound_config", "outbound_config"}
        if extra:
            raise ApiFault(
                400,
                "invalid_field",
                f"only inbound_config.pipeline_id and outbound_config.pipeline_id can be updated, not {', '.join(sorted(extra))}",
            )
        with self.lock:
            rec = self._number(number)
            changes: dict[str, str | None] = {}
            for key in ("inbound_config", "outbound_config"):
                if key not in body:
                    continue
                value = body[key]
                if value is None:
                    changes[key] = None
                    continue
                if not isinstance(value, dict) or set(value) - {"pipeline_id"}:
                    raise ApiFault(400, "invalid_field", f"{key} accepts only pipeline_id")
                if "pipeline_id" in value:
                    changes[key] = self._check_pipeline(value["pipeline_id"])
            self._conflict("update", number)
            if changes:
                rec["updated_ts"] = self.now()
            for key, value in changes.items():
                rec["inbound_pipeline_id" if key == "inbound_config" else "outbound_pipeline_id"] = value
            self.persist()
            return self.number_view(rec)

    def delete_number(self, number: str) -> None:
        with self.lock:
            self._number(number)
            self._conflict("delete", number)
            del self.numbers[number]
            self.persist()

    # ----------------------------------------------------------------- agents
    def _advance(self, agent: Agent, now: float) -> None:
        """Bring an agent's status up to the emulator clock (lazy lifecycle)."""
        if agent.status in ("STOPPED", "FAILED"):
            return
        if agent.stop_requested_at is not None:
            done = agent.stop_requested_at + self.settings.stop_delay_s
            if now >= done:
                agent.status, agent.stop_ts = "STOPPED", done
            else:
                agent.status = "STOPPING"
            return
        idle = agent.properties.get("idle_timeout", DEFAULT_IDLE_TIMEOUT_S)
        ends = [(agent.start_ts + MAX_RUNTIME_S, "the agent reached the 72 hour limit")]
        if isinstance(idle, (int, float)) and idle > 0:
            ends.append((agent.start_ts + idle, f"idle timeout: no user for {idle} seconds"))
        end, why = min(ends)
        if now >= end:
            agent.status, agent.stop_ts, agent.message = "STOPPED", end, why
        elif agent.status == "STARTING" and now >= agent.start_ts + self.settings.start_delay_s:
            agent.status = "RUNNING"

    def _agent(self, app_id: str, agent_id: str) -> Agent:
        agent = self.agents.get(agent_id)
        now = self.now()
        if agent is None or agent.app_id != app_id:
            raise ApiFault(404, "TaskNotFound", f"agent {agent_id} not found")
        self._advance(agent, now)
        if agent.stop_ts and now > agent.stop_ts + self.settings.retention_s:
            raise ApiFault(404, "TaskNotFound", f"agent {agent_id} not found")
        return agent

    def _running(self, app_id: str, agent_id: str) -> Agent:
        agent = self._agent(app_id, agent_id)
        if agent.status not in LIVE_STATUSES:
            raise ApiFault(404, "TaskNotFound", f"agent {agent_id} is not running ({agent.status})")
        return agent

    @staticmethod
    def _validate_properties(props: Any, *, needs_pipeline: bool) -> dict[str, Any]:
        if not isinstance(props, dict):
            raise ApiFault(400, "InvalidRequestBody", "properties must be an object")
        for key in REQUIRED_PROPERTIES:
            if props.get(key) in (None, ""):
                raise ApiFault(400, "MissingRequiredField", f"properties: {key} not found")
        if not isinstance(props["remote_rtc_uids"], list):
            raise ApiFault(400, "InvalidFieldValue", "properties.remote_rtc_uids must be a list")
        idle = props.get("idle_timeout")
        if idle is not None and (not isinstance(idle, int) or isinstance(idle, bool) or idle < 0):
            raise ApiFault(400, "InvalidFieldValue", "properties.idle_timeout must be a non-negative integer")
        if needs_pipeline:
            for key in ("llm", "tts"):
                if not isinstance(props.get(key), dict):
                    raise ApiFault(400, "MissingRequiredField", f"properties: {key} not found (no preset or pipeline_id)")
        return props

    def start_agent(self, app_id: str, body: Any, *, start_ts: float | None = None) -> Agent:
        if not isinstance(body, dict):
            raise ApiFault(400, "InvalidRequestBody", "the body must be a JSON object")
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise ApiFault(400, "MissingRequiredField", "name not found")
        preset, pipeline_id = body.get("preset"), body.get("pipeline_id")
        props = self._validate_properties(body.get("properties"), needs_pipeline=not (preset or pipeline_id))
        with self.lock:
            if pipeline_id is not None and pipeline_id not in self.pipelines:
                raise ApiFault(400, "InvalidFieldValue", f"pipeline_id {pipeline_id!r} does not exist")
            now = self.now()
            if self._name_taken(app_id, name, now) or self._uid_busy(app_id, props, now):
                raise ApiFault(409, "TaskConflict", f"an agent with the name {name!r} already exists")
            begun = now if start_ts is None else float(start_ts)
            agent = Agent(
                agent_id=_new_agent_id(),
                app_id=app_id,
                name=name,
                properties=copy.deepcopy(props),
                preset=preset,
                pipeline_id=pipeline_id,
                create_ts=begun,
                start_ts=begun,
            )
            self._advance(agent, now)
            self.agents[agent.agent_id] = agent
            self.used_names.setdefault(app_id, set()).add(name)
            return agent

    def _uid_busy(self, app_id: str, props: dict[str, Any], now: float) -> bool:
        """`uid-busy`: the channel already has a live or STOPPING agent with this uid."""
        if not self.has("uid-busy"):
            return False
        channel, uid = str(props.get("channel", "")), str(props.get("agent_rtc_uid", ""))
        for agent in self.agents.values():
            if agent.app_id == app_id and agent.channel == channel and str(agent.properties.get("agent_rtc_uid", "")) == uid:
                self._advance(agent, now)
                if agent.status not in ("STOPPED", "FAILED"):
                    return True
        return False

    def shown_status(self, agent: Agent) -> str:
        """The status the API reports: `idle-status` shows a running agent alone in its channel as IDLE."""
        if agent.status == "RUNNING" and self.has("idle-status") and (agent.app_id, agent.channel) in self.quiet_channels:
            return "IDLE"
        return agent.status

    def _name_taken(self, app_id: str, name: str, now: float) -> bool:
        if self.settings.name_reuse == "strict":
            return name in self.used_names.get(app_id, set())
        for agent in self.agents.values():
            if agent.app_id == app_id and agent.name == name:
                self._advance(agent, now)
                if agent.status not in ("STOPPED", "FAILED"):
                    return True
        return False

    def join(self, app_id: str, body: Any) -> dict[str, Any]:
        with self.lock:
            agent = self.start_agent(app_id, body)
            self.persist()
            return {"agent_id": agent.agent_id, "create_ts": int(agent.create_ts), "status": agent.status}

    def list_agents(self, app_id: str, query: dict[str, str]) -> dict[str, Any]:
        now = self.now()
        try:
            from_time = float(query["from_time"]) if "from_time" in query else now - 2 * 3600
            to_time = float(query["to_time"]) if "to_time" in query else now
            states = {int(s) for s in query.get("state", "2").split(",") if s.strip()}
            limit = int(query.get("limit", "20"))
        except ValueError as exc:
            raise ApiFault(400, "InvalidFieldValue", f"invalid query parameter: {exc}") from None
        if limit < 1:
            raise ApiFault(400, "InvalidFieldValue", "limit must be at least 1")
        if self.has("single-state") and "," in query.get("state", ""):
            raise ApiFault(400, "InvalidFieldValue", "state accepts one value per query")
        if self.has("page-limit-20") and limit > 20:
            raise ApiFault(400, "InvalidFieldValue", "limit must be between 1 and 20")
        limit = min(limit, 100)
        channel = query.get("channel")
        with self.lock:
            matches = []
            for agent in self.agents.values():
                if agent.app_id != app_id:
                    continue
                self._advance(agent, now)
                if channel is not None and agent.channel != channel:
                    continue
                if not (from_time <= agent.start_ts <= to_time):
                    continue
                if STATUS_CODES[self.shown_status(agent)] not in states:
                    continue
                if agent.stop_ts and now > agent.stop_ts + self.settings.retention_s:
                    continue
                matches.append(agent)
            matches.sort(key=lambda a: (a.start_ts, a.agent_id))
            start = 0
            cursor = query.get("cursor")
            if cursor:
                ids = [a.agent_id for a in matches]
                if cursor not in ids:
                    raise ApiFault(400, "InvalidFieldValue", f"cursor {cursor!r} is not valid")
                start = ids.index(cursor)
            page = matches[start : start + limit]
            following = matches[start + limit : start + limit + 1]
            items = [{"agent_id": a.agent_id, "start_ts": int(a.start_ts), "status": self.shown_status(a)} for a in page]
            return {
                "data": {"count": len(items), "list": items},
                "meta": {"cursor": following[0].agent_id if following else "", "total": len(matches)},
                "status": "ok",
            }

    def get_agent(self, app_id: str, agent_id: str) -> dict[str, Any]:
        with self.lock:
            agent = self._agent(app_id, agent_id)
            view = {
                "message": agent.message,
                "start_ts": int(agent.start_ts),
                "stop_ts": int(agent.stop_ts),
                "status": self.shown_status(agent),
                "agent_id": agent.agent_id,
                "name": agent.name,
                "channel": agent.channel,
            }
            return v.agent_view(view, self.settings.variants)

    def leave(self, app_id: str, agent_id: str) -> None:
        with self.lock:
            agent = self._agent(app_id, agent_id)
            if agent.status in ("STOPPED", "FAILED"):
                raise ApiFault(404, "TaskNotFound", f"agent {agent_id} has already stopped")
            if agent.stop_requested_at is None:
                agent.stop_requested_at = self.now()
                agent.message = "stopped by request"
                self._advance(agent, self.now())
            self.persist()

    def update_agent(self, app_id: str, agent_id: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
            raise ApiFault(400, "InvalidRequestBody", 'the body must be {"properties": {...}}')
        props = body["properties"]
        for key, value in props.items():
            if key not in UPDATABLE:
                raise ApiFault(400, "InvalidFieldValue", f"properties.{key} cannot be updated; stop and start the agent")
            allowed = UPDATABLE[key]
            if allowed is None:
                continue
            if not isinstance(value, dict):
                raise ApiFault(400, "InvalidFieldValue", f"properties.{key} must be an object")
            for sub in value:
                if sub not in allowed:
                    raise ApiFault(400, "InvalidFieldValue", f"properties.{key}.{sub} cannot be updated")
        with self.lock:
            agent = self._running(app_id, agent_id)
            for key, value in props.items():
                if key == "token":
                    agent.properties["token"] = value
                else:
                    target = agent.properties.setdefault(key, {})
                    for sub, subvalue in value.items():
                        target[sub] = copy.deepcopy(subvalue)
            self.persist()
            return {"agent_id": agent.agent_id, "create_ts": int(agent.create_ts), "status": agent.status}

    def speak(self, app_id: str, agent_id: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            raise ApiFault(400, "MissingRequiredField", "text not found")
        if len(body["text"].encode()) > 512:
            raise ApiFault(400, "InvalidFieldValue", "text is longer than 512 bytes")
        if body.get("priority", "INTERRUPT") not in ("INTERRUPT", "APPEND", "IGNORE"):
            raise ApiFault(400, "InvalidFieldValue", "priority must be INTERRUPT, APPEND or IGNORE")
        with self.lock:
            agent = self._running(app_id, agent_id)
            if (agent.properties.get("mllm") or {}).get("enable"):
                raise ApiFault(400, "NotImplemented", "speak is not supported in MLLM mode")
            agent.contents.append({"role": "assistant", "content": body["text"], "ts": self.now()})
            return self._ack(agent)

    def interrupt(self, app_id: str, agent_id: str) -> dict[str, Any]:
        with self.lock:
            return self._ack(self._running(app_id, agent_id))

    def think(self, app_id: str, agent_id: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            raise ApiFault(400, "MissingRequiredField", "text not found")
        with self.lock:
            agent = self._running(app_id, agent_id)
            agent.contents.append({"role": "user", "content": body["text"], "ts": self.now()})
            return self._ack(agent)

    @staticmethod
    def _ack(agent: Agent) -> dict[str, Any]:
        return {"agent_id": agent.agent_id, "channel": agent.channel, "start_ts": int(agent.start_ts)}

    def history(self, app_id: str, agent_id: str) -> dict[str, Any]:
        with self.lock:
            agent = self._running(app_id, agent_id)
            contents = [{"role": c["role"], "content": c["content"]} for c in agent.contents]
            return {"agent_id": agent.agent_id, "start_ts": int(agent.start_ts), "status": agent.status, "contents": contents}

    def turns(self, app_id: str, agent_id: str, query: dict[str, str]) -> dict[str, Any]:
        try:
            index = int(query.get("page_index", "1"))
            size = int(query.get("page_size", "50"))
        except ValueError:
            raise ApiFault(400, "InvalidFieldValue", "page_index and page_size must be integers") from None
        if index < 1 or size < 1:
            raise ApiFault(400, "InvalidFieldValue", "page_index and page_size start at 1")
        with self.lock:
            agent = self._agent(app_id, agent_id)
            turns = []
            for i, c in enumerate(agent.contents, start=1):
                at = int(c["ts"] * 1000)
                kind = "api_speak" if c["role"] == "assistant" else "voice_input"
                turns.append(
                    {
                        "agent_id": agent.agent_id,
                        "channel": agent.channel,
                        "turn_id": i,
                        "start": {"start_at": at, "type": kind, "metadata": {}},
                        "end": {"end_at": at + 800, "type": "ok", "metadata": {}},
                        "metrics": {"e2e_latency_ms": 800, "segmented_latency_ms": []},
                    }
                )
            pages = max(1, -(-len(turns) // size))
            return {
                "agent_id": agent.agent_id,
                "name": agent.name,
                "channel": agent.channel,
                "total_turn_count": len(turns),
                "pagination": {"page_index": index, "total_pages": pages, "is_last_page": index >= pages},
                "turns": turns[(index - 1) * size : index * size],
            }

    def crash(self, agent_id: str) -> dict[str, Any]:
        with self.lock:
            agent = self.agents.get(agent_id)
            if agent is None:
                raise ApiFault(404, "TaskNotFound", f"agent {agent_id} not found")
            agent.status, agent.stop_ts, agent.message = "FAILED", self.now(), "crashed (emulator admin)"
            self.persist()
            return {"agent_id": agent_id, "status": agent.status}

    # ----------------------------------------------------------------- telephony
    def call(self, app_id: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiFault(400, "invalid_request_body", "the body must be a JSON object")
        for key in ("name", "sip", "properties"):
            if body.get(key) is None:
                raise ApiFault(422, "unprocessable_content", f"missing required field: {key}")
        sip = body["sip"]
        for key in ("to_number", "from_number", "rtc_uid", "rtc_token"):
            if not isinstance(sip, dict) or sip.get(key) in (None, ""):
                raise ApiFault(422, "unprocessable_content", f"missing required field: sip.{key}")
        for key in ("to_number", "from_number"):
            if not E164.fullmatch(str(sip[key])):
                raise ApiFault(400, "invalid_phone_format", f"sip.{key} is not an E.164 phone number")
        with self.lock:
            origin = self.numbers.get(sip["from_number"])
            if origin is None or not origin["outbound"]:
                raise ApiFault(422, "unprocessable_content", f"{sip['from_number']} is not imported for outbound calls")
            start = {"name": body["name"], "properties": body["properties"], "pipeline_id": body.get("pipeline_id")}
            try:
                agent = self.start_agent(app_id, start)
            except ApiFault as fault:
                raise ApiFault(fault.status, "invalid_request" if fault.status == 400 else "conflict", fault.message) from None
            self.calls[agent.agent_id] = Call(
                agent_id=agent.agent_id,
                app_id=app_id,
                to_number=sip["to_number"],
                from_number=sip["from_number"],
                pipeline_id=body.get("pipeline_id"),
                type="outbound",
                channel=agent.channel,
                create_ts=agent.create_ts,
            )
            self.persist()
            return {"agent_id": agent.agent_id}

    @staticmethod
    def _call_view(call: Call) -> dict[str, Any]:
        return {
            "to_number": call.to_number,
            "from_number": call.from_number,
            "pipeline_id": call.pipeline_id,
            "type": call.type,
            "agent_id": call.agent_id,
            "channel": call.channel,
            "create_ts": int(call.create_ts),
            "state": call.state,
            "stop_ts": int(call.stop_ts),
        }

    def list_calls(self, app_id: str, query: dict[str, str]) -> dict[str, Any]:
        now = self.now()
        try:
            from_time = float(query.get("from_time", now - 60 * 86400))
            to_time = float(query.get("to_time", now))
            limit = min(max(int(query.get("limit", "20")), 1), 100)
        except ValueError as exc:
            raise ApiFault(400, "invalid_request", f"invalid query parameter: {exc}") from None
        with self.lock:
            calls = [
                c
                for c in self.calls.values()
                if c.app_id == app_id
                and from_time <= c.create_ts <= to_time
                and (not query.get("type") or c.type == query["type"])
                and (not query.get("number") or query["number"] in (c.to_number, c.from_number))
            ]
            calls.sort(key=lambda c: (c.create_ts, c.agent_id))
            ids = [c.agent_id for c in calls]
            start = ids.index(query["cursor"]) if query.get("cursor") in ids else 0
            page = calls[start : start + limit]
            following = calls[start + limit : start + limit + 1]
            return {
                "data": {"count": len(page), "list": [self._call_view(c) for c in page]},
                "meta": {"cursor": following[0].agent_id if following else "", "total": len(calls)},
                "status": "ok",
            }

    def _call(self, app_id: str, agent_id: str) -> Call:
        call = self.calls.get(agent_id)
        if call is None or call.app_id != app_id:
            raise ApiFault(404, v.not_found_code("call_not_found", self.settings.variants), f"call {agent_id} not found")
        return call

    def get_call(self, app_id: str, agent_id: str) -> dict[str, Any]:
        with self.lock:
            call = self._call(app_id, agent_id)
            return {**self._call_view(call), "reason": call.reason}

    def hangup(self, app_id: str, agent_id: str) -> dict[str, Any]:
        with self.lock:
            call = self._call(app_id, agent_id)
            if call.state != "hangup":
                call.state, call.stop_ts, call.reason = "hangup", self.now(), "request"
                agent = self.agents.get(agent_id)
                if agent and agent.stop_requested_at is None and agent.status in LIVE_STATUSES:
                    agent.stop_requested_at = self.now()
            self.persist()
            return {}

    # ----------------------------------------------------------------- admin seed
    def seed(self, doc: Any) -> dict[str, Any]:
        if not isinstance(doc, dict):
            raise ApiFault(400, "invalid_request_body", "seed expects a JSON object")
        with self.lock:
            for pipeline in doc.get("pipelines", []):
                self.pipelines[pipeline["pipeline_id"]] = pipeline.get("pipeline_name", pipeline["pipeline_id"])
            for number in doc.get("phone_numbers", []):
                self.add_number(number, seeded=True)
            ids = []
            for spec in doc.get("agents", []):
                body = {k: spec[k] for k in ("name", "properties", "preset", "pipeline_id") if k in spec}
                ids.append(self.start_agent(spec["app_id"], body, start_ts=spec.get("start_ts")).agent_id)
            self.persist()
            return {"ok": True, "agent_ids": ids, "phone_numbers": len(doc.get("phone_numbers", []))}
