"""Telephony: outbound calls (`POST call`), their list, get and hangup.

A call starts an agent like a join does and remembers the numbers it connects.
"""

from __future__ import annotations

from typing import Any

from . import variants as v
from .agents import AgentRules
from .records import E164, LIVE_STATUSES, ApiFault, Call


class CallRules(AgentRules):
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
