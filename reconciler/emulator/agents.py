"""Agents: start (join), list, get, stop (leave), update, speak, think, history, turns, crash.

The lifecycle is lazy: an agent's status is brought up to the emulator clock whenever it is
read (start delay, asynchronous stop, idle timeout, the 72-hour cap, token expiry). With an app
certificate the RTC token of a join or an update is verified by `tokens.py`.
"""

from __future__ import annotations

import copy
from typing import Any

from . import tokens
from . import variants as v
from .records import (
    CHANNEL,
    DEFAULT_IDLE_TIMEOUT_S,
    LIVE_STATUSES,
    MAX_RUNTIME_S,
    NAME,
    REQUIRED_PROPERTIES,
    STATUS_CODES,
    UPDATABLE,
    Agent,
    ApiFault,
    new_agent_id,
)
from .state import StoreState


class AgentRules(StoreState):
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
        ends = [(agent.start_ts + MAX_RUNTIME_S, "STOPPED", "the agent reached the 72 hour limit")]
        if isinstance(idle, (int, float)) and idle > 0:
            ends.append((agent.start_ts + idle, "STOPPED", f"idle timeout: no user for {idle} seconds"))
        if agent.token_expires_at is not None:
            ends.append((agent.token_expires_at, "FAILED", "token expired"))
        end, status, why = min(ends)
        if now >= end:
            agent.status, agent.stop_ts, agent.message = status, end, why
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
        if not isinstance(props["channel"], str) or not CHANNEL.fullmatch(props["channel"]):
            raise ApiFault(400, "InvalidFieldValue", "properties.channel must be 1-64 of a-z A-Z 0-9 space !#$%&()+-:;<=.>?@[]^_{|}~,")
        uid = props["agent_rtc_uid"]
        if isinstance(uid, bool) or not isinstance(uid, (str, int)) or not NAME.fullmatch(str(uid)):
            raise ApiFault(400, "InvalidFieldValue", "properties.agent_rtc_uid must be a uid or a user account without control characters")
        if not isinstance(props["token"], str):
            raise ApiFault(400, "InvalidFieldValue", "properties.token must be a string")
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

    def _check_token(self, app_id: str, props: dict[str, Any], token: Any) -> float | None:
        """With an app certificate: when `token` expires, or 403 `invalid_token`. Without: None."""
        certificate = self.settings.app_certificate
        if not certificate:
            return None
        uid = props.get("agent_rtc_uid")
        try:
            return tokens.verify(
                token,
                certificate=certificate,
                app_id=app_id,
                channel=str(props.get("channel", "")),
                uid="" if uid in (0, "0") else str(uid),
                now=self.now(),
            )
        except tokens.TokenError as exc:
            raise ApiFault(403, "invalid_token", f"invalid RTC token: {exc}") from None

    def start_agent(self, app_id: str, body: Any, *, start_ts: float | None = None, seeded: bool = False) -> Agent:
        if not isinstance(body, dict):
            raise ApiFault(400, "InvalidRequestBody", "the body must be a JSON object")
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise ApiFault(400, "MissingRequiredField", "name not found")
        if not NAME.fullmatch(name):
            raise ApiFault(400, "InvalidFieldValue", "name must be at most 255 characters, without control characters")
        preset, pipeline_id = body.get("preset"), body.get("pipeline_id")
        for key, value in (("preset", preset), ("pipeline_id", pipeline_id)):
            if value is not None and not isinstance(value, str):
                raise ApiFault(400, "InvalidFieldValue", f"{key} must be a string")
        props = self._validate_properties(body.get("properties"), needs_pipeline=not (preset or pipeline_id))
        with self.lock:
            if pipeline_id is not None and pipeline_id not in self.pipelines:
                raise ApiFault(400, "InvalidFieldValue", f"pipeline_id {pipeline_id!r} does not exist")
            expiry = None if seeded else self._check_token(app_id, props, props["token"])
            now = self.now()
            if self._name_taken(app_id, name, now) or self._uid_busy(app_id, props, now):
                raise ApiFault(409, "TaskConflict", f"an agent with the name {name!r} already exists")
            begun = now if start_ts is None else float(start_ts)
            agent = Agent(
                agent_id=new_agent_id(),
                app_id=app_id,
                name=name,
                properties=copy.deepcopy(props),
                preset=preset,
                pipeline_id=pipeline_id,
                create_ts=begun,
                start_ts=begun,
                token_expires_at=expiry,
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
        if "token" in props and not isinstance(props["token"], str):
            raise ApiFault(400, "InvalidFieldValue", "properties.token must be a string")
        with self.lock:
            agent = self._running(app_id, agent_id)
            if "token" in props:
                expiry = self._check_token(app_id, agent.properties, props["token"])
                if expiry is not None:
                    agent.token_expires_at = expiry
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
