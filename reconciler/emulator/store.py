"""The emulator's data and business rules: pipelines, phone numbers, agents, calls, the clock.

Owns everything the Agora API would remember and every rule it enforces (validation, name
reuse, the agent lifecycle against the emulator clock). It knows nothing about HTTP: the
application in `app.py` turns requests into calls here and `ApiFault`s into error bodies.
`Store` is assembled from its parts: `state.py` (records, clock, data file), `agents.py`,
`telephony.py`, and here phone numbers, pipelines and the admin operations (reset, config,
channels, seed). Imports nothing from the rest of `reconciler/`, so a client bug is never
mirrored here.
"""

from __future__ import annotations

import copy
from typing import Any

from . import variants as v
from .records import DEMO_PIPELINES, E164, ApiFault, Settings, strip_password
from .telephony import CallRules

__all__ = ["DEMO_PIPELINES", "ApiFault", "Settings", "Store"]


class Store(CallRules):
    """All emulator state behind one lock. Every public method is atomic."""

    # ----------------------------------------------------------------- admin
    def reset(self) -> None:
        with self.lock:
            self._empty()
            self.clock_offset = 0.0
            self.settings = self.fresh_settings()
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
            outbound["address"] = strip_password(outbound["address"])
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
        if not isinstance(body["label"], str):
            raise ApiFault(422, "unprocessable_content", "label must be a string")
        for key in ("inbound", "outbound"):
            if not isinstance(body.get(key, True), bool):
                raise ApiFault(422, "unprocessable_content", f"{key} must be true or false")
        bindings = {}
        for key in ("inbound_config", "outbound_config"):
            if "pipeline_id" in body[key]:
                if not seeded:
                    raise ApiFault(400, "invalid_field", f"{key}.pipeline_id can only be set with PATCH")
                if body[key]["pipeline_id"] is not None and not isinstance(body[key]["pipeline_id"], str):
                    raise ApiFault(400, "invalid_field", f"{key}.pipeline_id must be a string or null")
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
                "label": body["label"],
                "inbound": body.get("inbound", True),
                "outbound": body.get("outbound", True),
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

    # ----------------------------------------------------------------- admin seed
    def seed(self, doc: Any) -> dict[str, Any]:
        """Load pipelines, numbers and agents as if created through the API; all or nothing."""
        if not isinstance(doc, dict):
            raise ApiFault(400, "invalid_request_body", "seed expects a JSON object")
        unknown = set(doc) - {"pipelines", "phone_numbers", "agents"}
        if unknown:
            raise ApiFault(400, "invalid_field", f"unknown seed field(s): {', '.join(sorted(unknown))}")
        pipelines, numbers, agents = (_seed_list(doc, key) for key in ("pipelines", "phone_numbers", "agents"))
        for i, pipeline in enumerate(pipelines):
            pid, name = pipeline.get("pipeline_id"), pipeline.get("pipeline_name", pipeline.get("pipeline_id"))
            if not isinstance(pid, str) or not pid or not isinstance(name, str):
                raise ApiFault(400, "invalid_field", f"pipelines[{i}] needs a pipeline_id (and a pipeline_name) string")
        for i, spec in enumerate(agents):
            if not isinstance(spec.get("app_id"), str) or not spec["app_id"]:
                raise ApiFault(400, "invalid_field", f"agents[{i}] needs an app_id string")
            start_ts = spec.get("start_ts")
            if start_ts is not None and (isinstance(start_ts, bool) or not isinstance(start_ts, (int, float))):
                raise ApiFault(400, "invalid_field", f"agents[{i}].start_ts must be a number of seconds")
        with self.lock:
            saved = copy.deepcopy((self.pipelines, self.numbers, self.agents, self.used_names))
            try:
                for pipeline in pipelines:
                    self.pipelines[pipeline["pipeline_id"]] = pipeline.get("pipeline_name", pipeline["pipeline_id"])
                where = "phone_numbers"
                for i, number in enumerate(numbers):
                    where = f"phone_numbers[{i}]"
                    self.add_number(number, seeded=True)
                ids = []
                for i, spec in enumerate(agents):
                    where = f"agents[{i}]"
                    body = {k: spec[k] for k in ("name", "properties", "preset", "pipeline_id") if k in spec}
                    ids.append(self.start_agent(spec["app_id"], body, start_ts=spec.get("start_ts"), seeded=True).agent_id)
            except ApiFault as fault:
                self.pipelines, self.numbers, self.agents, self.used_names = saved
                raise ApiFault(400, "invalid_field", f"{where}: {fault.message}") from None
            self.persist()
            return {"ok": True, "agent_ids": ids, "phone_numbers": len(numbers)}


def _seed_list(doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = doc.get(key, [])
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ApiFault(400, "invalid_field", f"{key} must be a list of objects")
    return items
