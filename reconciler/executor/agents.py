"""The steps of an agent change: stop, update in place (a fresh minted token when the agent declares
none), and start (journaled as pending under a fresh instance name before `POST join`, so a lost
answer is resolved by name on the next run, never duplicated; a replace or restart first waits,
bounded, for the old instance to leave its channel when the new one takes its seat). Agents without
a declared token get a freshly minted one (`tokens.Minter`) at every start and token update; the
ledger keeps its fingerprint and validity window, never the token.
"""

from __future__ import annotations

import secrets as pysecrets
from collections.abc import Mapping
from typing import Any

from ..diff import MINTED, TOKEN_PATH, applied_agent_essence
from ..errors import ConflictError, NotFoundError
from ..live import StartAttempt, started_by
from ..model import AgentSpec, Kind, agent_uid, wants_rtm
from ..plan import Action, Change
from ..secrets import fingerprint
from ..tokens import MintedToken
from .steps import Steps, drop, log, now

GONE_STATUSES = frozenset({"STOPPED", "FAILED", "GONE"})
LEAVE_TIMEOUT_S = 60.0  # how long a replace or restart waits for the old instance to leave


def _same_seat(prior: Mapping[str, Any], spec: AgentSpec) -> bool:
    """The new instance joins the old one's channel with the same uid (unknown counts as same)."""
    props = (prior.get("applied") or {}).get("properties") or {}
    channel = prior.get("channel") or props.get("channel")
    uid = prior.get("agent_rtc_uid") or props.get("agent_rtc_uid")
    same_channel = channel is None or str(channel) == spec.channel
    same_uid = uid is None or str(uid) == str(spec.properties.get("agent_rtc_uid"))
    return same_channel and same_uid


def _new_instance_name(name: str) -> str:
    return f"{name}-{pysecrets.token_hex(4)}"


class AgentSteps(Steps):
    def _apply_agent(self, change: Change) -> str | None:
        address = str(change.address)
        prior: Mapping[str, Any] = change.prior or {}
        if change.action is Action.DELETE:
            if prior.get("agent_id") and change.disruptive:  # not running: only the ledger entry goes
                self._stop(str(prior["app_id"]), str(prior["agent_id"]))
            self.journal.record(lambda res: drop(res, address))
            return None
        spec: AgentSpec = change.desired
        if change.action is Action.UPDATE:
            body = self._update_body(change, spec)
            minted = self._mint(spec) if any(f.path == TOKEN_PATH for f in change.fields) else None
            if minted is not None:
                body["token"] = minted.token
            self.client.update_agent(spec.app_id, str(prior["agent_id"]), body)
            # a renewal alone (the loop's heal mode) leaves what was applied of the configuration as it was
            token_only = minted is not None and all(f.path == TOKEN_PATH and f.after == MINTED for f in change.fields)
            applied = prior.get("applied") if token_only else applied_agent_essence(spec, self.journal.ledger.salt)
            entry = {**prior, "applied": applied, "updated_at": now()}
            self._note_token(entry, spec, minted)
            self.journal.record(lambda res: res.__setitem__(address, entry))
            return None
        detail = None
        previous = str(prior["agent_id"]) if prior.get("agent_id") else None
        if previous and change.action in (Action.REPLACE, Action.RESTART):
            if change.action is Action.REPLACE:
                self._stop(str(prior["app_id"]), previous)
            if _same_seat(prior, spec):
                detail = self._wait_gone(str(prior["app_id"]), previous, spec)
        restarts = int(prior.get("restarts", 0)) + (1 if change.action is Action.RESTART else 0)
        if change.action is Action.CREATE and prior.get("pending") and prior.get("instance_name") and not previous:
            self._resume_start(spec, prior, restarts)
            return None
        self._start(spec, _new_instance_name(spec.name), restarts, previous)
        return detail

    def _resume_start(self, spec: AgentSpec, prior: Mapping[str, Any], restarts: int) -> None:
        """An interrupted start whose agent is not listed may still be in flight at the API and land
        later. So it is re-sent under its journaled name, app, channel and uid (the API never lets
        a name be reused: whichever of the two lands second is refused, so one agent, never an
        orphan), and only then, if the declaration moved it elsewhere, replaced by a fresh instance."""
        address = str(spec.address)
        attempt = StartAttempt.from_entry(prior)
        body = spec.join_body(attempt.instance_name)
        body["properties"] = {**body["properties"], "channel": attempt.channel}
        if attempt.agent_rtc_uid is not None:
            body["properties"]["agent_rtc_uid"] = attempt.agent_rtc_uid
        applied = prior.get("applied")

        def send() -> tuple[str, int]:
            nonlocal applied
            try:
                answer = self.client.join(attempt.app_id, body)
            except ConflictError as exc:  # the earlier request landed: it runs what it was sent with
                return self._find_started(spec, attempt, exc, resent=True)
            applied = applied_agent_essence(spec, self.journal.ledger.salt)
            return str(answer["agent_id"]), int(answer.get("create_ts") or now())

        agent_id, started = self._checked(f"start of {attempt.instance_name}", send)
        done = {**prior, "agent_id": agent_id, "pending": False, "started_at": started, "applied": applied}
        self.journal.record(lambda res: res.__setitem__(address, done))
        if attempt.app_id != spec.app_id or not _same_seat(prior, spec):
            self._stop(attempt.app_id, agent_id)
            self._start(spec, _new_instance_name(spec.name), restarts, agent_id)

    def _wait_gone(self, app_id: str, agent_id: str, spec: AgentSpec) -> str | None:
        """Wait (bounded) until the old instance has left its channel: all uids in a channel must
        be unique, so its replacement joins with the same uid only then. Says how long it took."""
        waited, delay = 0.0, 0.1
        while True:
            try:
                status = str(self.client.get_agent(app_id, agent_id).get("status", ""))
            except NotFoundError:
                status = "GONE"
            if status in GONE_STATUSES:
                return f"waited {waited:.1f}s for agent {agent_id} to leave" if waited else None
            if waited >= self.leave_timeout_s:
                raise ConflictError(
                    f"agent {agent_id} is still {status} after {waited:.0f}s: not starting its replacement with the same uid "
                    f"{spec.properties.get('agent_rtc_uid')} in channel {spec.channel}; run apply again",
                    status=409,
                )
            self.sleep(delay)
            waited += delay
            delay = min(delay * 2, 2.0)

    @staticmethod
    def _update_body(change: Change, spec: AgentSpec) -> dict[str, Any]:
        """Only what changed, with whole `params` objects (the API replaces them as a whole)."""
        props = spec.properties
        body: dict[str, Any] = {}
        for f in change.fields:
            parts = f.path.split(".")
            if parts[1] == "token":
                if "token" in props:
                    body["token"] = props["token"]
            elif parts[1] in ("llm", "mllm") and len(parts) >= 3:
                body.setdefault(parts[1], {})[parts[2]] = props.get(parts[1], {}).get(parts[2])
        return body

    def _stop(self, app_id: str, agent_id: str) -> None:
        try:
            self.client.leave(app_id, agent_id)
        except NotFoundError:
            log.info("agent %s had already stopped", agent_id)

    def _start(self, spec: AgentSpec, instance: str, restarts: int, previous: str | None = None) -> None:
        address = str(spec.address)
        uid = spec.properties.get("agent_rtc_uid")
        pending = {
            "kind": Kind.AGENT.value,
            "app_id": spec.app_id,
            "agent_id": None,
            "instance_name": instance,
            "channel": spec.channel,
            "agent_rtc_uid": None if uid is None else str(uid),
            "attempted_at": now(),
            "previous_agent_id": previous,
            "pending": True,
            "applied": applied_agent_essence(spec, self.journal.ledger.salt),
            "started_at": None,
            "restarts": restarts,
        }
        self.journal.update(lambda res: res.__setitem__(address, pending))  # journal before the POST
        attempt = StartAttempt.from_entry(pending)
        tries = 0

        minted = self._mint(spec)
        body = spec.join_body(instance)
        if minted is not None:
            body["properties"]["token"] = minted.token

        def send() -> tuple[str, int]:
            nonlocal tries
            tries += 1
            try:
                answer = self.client.join(spec.app_id, body)
                return str(answer["agent_id"]), int(answer.get("create_ts") or now())
            except ConflictError as exc:
                return self._find_started(spec, attempt, exc, resent=tries > 1)

        agent_id, started = self._checked(f"start of {instance}", send)
        done = {**pending, "agent_id": agent_id, "pending": False, "started_at": started}
        self._note_token(done, spec, minted)
        self.journal.record(lambda res: res.__setitem__(address, done))

    def _mint(self, spec: AgentSpec) -> MintedToken | None:
        """A fresh token when the agent declares none (the certificate is set)."""
        if self.minter is None or "token" in spec.properties:
            return None
        # never registered with REDACTOR one by one (its pattern would grow with every renewal):
        # `secrets.redact` masks every AccessToken2 by its shape
        return self.minter.mint(spec.app_id, spec.channel, agent_uid(spec), rtm=wants_rtm(spec))

    def _note_token(self, entry: dict[str, Any], spec: AgentSpec, minted: MintedToken | None) -> None:
        """The ledger keeps a minted token's fingerprint and validity window, never the token."""
        if minted is not None:
            entry["token"] = {
                "fingerprint": fingerprint(self.journal.ledger.salt, minted.token),
                "issued_at": minted.issued_at,
                "expires_at": minted.expires_at,
            }
        elif "token" in spec.properties:
            entry.pop("token", None)

    def _find_started(self, spec: AgentSpec, attempt: StartAttempt, conflict: ConflictError, *, resent: bool) -> tuple[str, int]:
        """A 409 on join. Only a re-sent join can have met its own earlier attempt: then look for
        what that attempt started (by name, else the one unowned agent of the channel started
        since). Otherwise, or when nothing is found, the channel's uid is taken: an error."""
        uid = f" uid {attempt.agent_rtc_uid}" if attempt.agent_rtc_uid else " uid"
        if resent:
            found = started_by(self.client, attempt, self.journal.owned_agent_ids())
            if len(found) == 1:
                log.info("the earlier start of %s had succeeded as agent %s: resumed", attempt.instance_name, found[0].agent_id)
                return found[0].agent_id, found[0].start_ts or now()
            if len(found) > 1:
                names = ", ".join(sorted(a.agent_id for a in found))
                raise ConflictError(
                    f"the start of {attempt.describe()} lost its answer and {len(found)} agents of that channel "
                    f"could be it ({names}); record the right one with `agora-reconciler state adopt {spec.address} --agent-id AGENT_ID`",
                    status=409,
                    api_reason=conflict.api_reason,
                )
        raise ConflictError(
            f"join refused with 409 {conflict.api_reason or 'conflict'} and no agent of ours has the name "
            f"{attempt.instance_name}: another agent in channel {attempt.channel} may hold{uid} (it must be unique in a channel)",
            status=409,
            api_reason=conflict.api_reason,
        )
