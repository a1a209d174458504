"""The typed Agora operations: phone numbers (list, get, add, update, delete) and agents (join,
list pages and the cursor-checked page iterator, get, leave, update), each one call on the
`Transport` core. POSTs that create things (join, add, update) are never re-sent here: the
executor retries them only where it can check what happened.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from ..errors import FatalTransportError, LiveReadError, ServerError
from .transport import Transport

LIVE_STATE_CODES = (1, 2, 5)  # STARTING, RUNNING, RECOVERING
ALL_STATE_CODES = (0, 1, 2, 3, 4, 5, 6)


def _segment(value: str, safe: str = "") -> str:
    """One path segment. An id that is empty, `.` or `..` would address another resource once any
    server or proxy normalises the path (`projects/../agents` is `agents`): never sent."""
    if value in ("", ".", ".."):
        raise FatalTransportError(f"the id {value!r} cannot be sent as one path segment of a request (no app, agent or number has it)")
    return quote(value, safe=safe)


class Client(Transport):
    """One session against one base URL. Thread-safe for concurrent calls."""

    # ----------------------------------------------------------------- phone numbers
    @staticmethod
    def _number_path(number: str) -> str:
        return "v2/phone-numbers/" + _segment(number, "+")

    def list_numbers(self) -> list[dict[str, Any]]:
        result = self.request("GET", "v2/phone-numbers")
        if not isinstance(result, list):
            raise ServerError("phone-numbers list did not return a JSON array", status=200)
        return result

    def get_number(self, number: str) -> dict[str, Any]:
        return _object(self.request("GET", self._number_path(number)), "the phone number", empty=False)

    def add_number(self, body: dict[str, Any]) -> dict[str, Any]:
        return _object(self.request("POST", "v2/phone-numbers", body=body), "the import")

    def update_number(self, number: str, body: dict[str, Any]) -> dict[str, Any]:
        return _object(self.request("PATCH", self._number_path(number), body=body), "the update")

    def delete_number(self, number: str) -> None:
        self.request("DELETE", self._number_path(number))

    # ----------------------------------------------------------------- agents
    @staticmethod
    def _project(app_id: str, *rest: str) -> str:
        return "/".join(["v2/projects", _segment(app_id), *(_segment(r) for r in rest)])

    def join(self, app_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Start an agent. Never re-sent here: a lost answer is resolved by the caller by name."""
        return _object(self.request("POST", self._project(app_id, "join"), body=body), "the join")

    def list_agents_page(
        self,
        app_id: str,
        *,
        from_time: int,
        states: tuple[int, ...],
        limit: int = 100,
        channel: str | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"from_time": from_time, "state": ",".join(str(s) for s in states), "limit": limit}
        if channel is not None:
            params["channel"] = channel
        if cursor:
            params["cursor"] = cursor
        return dict(self.request("GET", self._project(app_id, "agents"), params=params) or {})

    def iter_agents(
        self,
        app_id: str,
        *,
        from_time: int,
        states: tuple[int, ...] = LIVE_STATE_CODES,
        channel: str | None = None,
        limit: int = 100,
    ) -> Iterator[dict[str, Any]]:
        """Every agent matching the filter, over all pages. Explicit `from_time`/`state`/`limit`:
        the API's defaults (2 hours, RUNNING only, 20) would hide long-running agents."""
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            page = self.list_agents_page(app_id, from_time=from_time, states=states, limit=limit, channel=channel, cursor=cursor)
            items = (page.get("data") or {}).get("list") or []
            yield from items
            next_cursor = (page.get("meta") or {}).get("cursor")
            if not next_cursor or not items:
                return
            if next_cursor == cursor or next_cursor in seen:
                raise LiveReadError(f"agents.list for app {app_id}: the cursor {next_cursor!r} did not advance")
            seen.add(next_cursor)
            cursor = next_cursor

    def get_agent(self, app_id: str, agent_id: str) -> dict[str, Any]:
        return dict(self.request("GET", self._project(app_id, "agents", agent_id)))

    def leave(self, app_id: str, agent_id: str) -> None:
        """Stop an agent. Retried (stopping twice is harmless: the second answers 404)."""
        self.request("POST", self._project(app_id, "agents", agent_id, "leave"), retry=True)

    def update_agent(self, app_id: str, agent_id: str, properties: dict[str, Any]) -> dict[str, Any]:
        return dict(self.request("POST", self._project(app_id, "agents", agent_id, "update"), body={"properties": properties}) or {})


def _object(result: Any, what: str, *, empty: bool = True) -> dict[str, Any]:
    """An answer that must be a JSON object (`empty`: an empty body reads as `{}`); anything else
    is the API's fault, said as such rather than failing later on its shape."""
    if result is None and empty:
        return {}
    if not isinstance(result, dict):
        kind = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(result), "value")
        shown = "an empty body" if result is None else f"a JSON {kind}"
        raise ServerError(f"{what} answered {shown}, not a JSON object", status=200)
    return result
