"""Renderers: a `Plan` (or validation result) to text, JSON, Markdown or GitHub annotations.

Renderers only render: every decision (what changes, what is sensitive, what is unsafe) was
made before; values arrive masked. Functions return strings; `cli` writes them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import Diagnostic
from .plan import DRIFT, Action, Change, FieldChange, Plan

if TYPE_CHECKING:
    from .wiring import Wiring

SYMBOLS = {Action.CREATE: "+", Action.UPDATE: "~", Action.REPLACE: "-/+", Action.DELETE: "-", Action.RESTART: "↻"}
COLORS = {Action.CREATE: "32", Action.UPDATE: "33", Action.REPLACE: "35", Action.DELETE: "31", Action.RESTART: "36"}
KIND_TITLES = {"phone_number": "Phone numbers", "agent": "Agents"}
MARKDOWN_LIMIT = 65_000
NO_CHANGES = "No changes. The account matches the configuration."
NO_DRIFT = "No drift. The account matches the configuration."
MARKER = "<!-- agora-reconciler {what}: {source} -->"
DIAGRAM_OPEN_MAX = 12  # nodes; a larger diagram is collapsed
DIAGRAM_MAX_CHARS = 20_000
# `json.dumps(value, ensure_ascii=False, sort_keys=True)` builds this encoder anew on every call;
# a plan of thousands of numbers shows tens of thousands of values, so it is built once.
_ENCODE = json.JSONEncoder(ensure_ascii=False, sort_keys=True).encode
_ENCODE_TEXT = json.encoder.encode_basestring  # what that encoder does with a str (ensure_ascii=False)


def marker(source: str, *, drift: bool = False) -> str:
    """The hidden first line of a Markdown plan (or drift report): CI finds its own comment by it."""
    return MARKER.format(what="drift" if drift else "plan", source=source.replace("--", "-\u200b-"))


def _paint(text: str, code: str, color: bool) -> str:
    return f"\033[{code}m{text}\033[0m" if color else text


def _value(value: Any) -> str:
    """A value as JSON (`json.dumps(value, ensure_ascii=False, sort_keys=True)`), clipped to 120
    characters. Text, booleans, integers and lists of text, most of what a plan shows, are encoded
    without the encoder's set-up per call (the same functions, the same bytes)."""
    kind = type(value)
    if kind is str:
        text = _ENCODE_TEXT(value)
    elif kind is bool:
        text = "true" if value else "false"
    elif value is None:
        return "(none)"
    elif kind is int:
        text = int.__repr__(value)
    elif kind is list and all(type(item) is str for item in value):
        text = "[" + ", ".join(map(_ENCODE_TEXT, value)) + "]"
    else:
        text = _ENCODE(value)
    return text if len(text) <= 120 else text[:117] + "..."


_DRIFT_NOTE = "  (drift: changed outside the tool)"


def _field_line(action: Action, f: FieldChange) -> str:
    origin = _DRIFT_NOTE if f.origin == DRIFT else ""
    if action is Action.CREATE or (f.before is None and f.after is not None):
        return f"+ {f.path}: {_value(f.after)}{origin}"
    if f.after is None:
        return f"- {f.path}: {_value(f.before)}{origin}"
    suffix = " (changed)" if f.sensitive else ""
    return f"~ {f.path}: {_value(f.before)} -> {_value(f.after)}{suffix}{origin}"


def summary_line(plan: Plan, *, drift: bool = False) -> str:
    s = plan.summary()
    if not plan.has_changes:
        line = NO_DRIFT if drift else NO_CHANGES
    else:
        parts = [f"{s[a.value]} to {a.value}" for a in Action]
        line = f"Drift: {len(plan.changes)} resource(s) differ; apply would: {', '.join(parts)}." if drift else f"Plan: {', '.join(parts)}."
    line += f" {s['unchanged']} unchanged, {s['unmanaged']} unmanaged left alone."
    return line


def _adoption_line(plan: Plan) -> str | None:
    if not plan.adopted:
        return None
    kinds: dict[str, int] = {}
    for address in plan.adopted:
        kinds[address.kind] = kinds.get(address.kind, 0) + 1
    parts = [f"{n} {'number' if k == 'phone_number' else 'agent'}{'s' if n != 1 else ''}" for k, n in sorted(kinds.items())]
    return f"{' and '.join(parts)} will be adopted (already in the account, not yet owned)."


def render_text(plan: Plan, *, color: bool = False, drift: bool = False) -> str:
    lines: list[str] = []
    if plan.has_changes:
        lines.append("The account has drifted from the configuration:" if drift else "agora-reconciler will perform the following actions:")
        lines.append("")
    for change in plan.changes:
        symbol = SYMBOLS[change.action]
        head = f"{symbol} {change.address}"
        if change.disruptive:
            head += "  (disruptive)"
        lines.append("  " + _paint(head, COLORS[change.action], color))
        lines.append(f"      # {change.reason}")
        if change.action is Action.CREATE:  # `_field_line` of a create, inline: a plan may create thousands
            lines += [f"      + {f.path}: {_value(f.after)}{_DRIFT_NOTE if f.origin == DRIFT else ''}" for f in change.fields]
        else:
            lines += ["      " + _field_line(change.action, f) for f in change.fields]
        lines.append("")
    adoption = _adoption_line(plan)
    if adoption:
        lines.append(adoption)
    for note in plan.notes:
        lines.append(f"Note: {note}")
    for warning in plan.warnings:
        lines.append(_paint("Warning: ", "33", color) + warning)
    for error in plan.errors:
        lines.append(_paint("Error: ", "31", color) + error)
    lines.append(_paint(summary_line(plan, drift=drift), "1", color))
    return "\n".join(lines) + "\n"


def render_json(plan: Plan) -> str:
    return json.dumps(plan.to_dict(), indent=2, ensure_ascii=False) + "\n"


def _markdown_change(change: Change) -> str:
    lines = [f"{SYMBOLS[change.action]} {change.address}{'  (disruptive)' if change.disruptive else ''}", f"    # {change.reason}"]
    lines += ["    " + _field_line(change.action, f) for f in change.fields]
    return "\n".join(lines)


def _diagram(diagram: Wiring | None) -> str:
    if diagram is None or diagram.empty:
        return ""
    from .render_graph import render_mermaid  # only Markdown with a wiring diagram

    chart = render_mermaid(diagram)
    if len(chart) > DIAGRAM_MAX_CHARS:
        return f"_The wiring diagram of these changes ({len(diagram.nodes)} nodes) is too large for a comment: run `agora-reconciler graph`._\n\n"
    block = f"```mermaid\n{chart}```\n"
    if len(diagram.nodes) > DIAGRAM_OPEN_MAX:
        return f"<details><summary>Wiring of these changes: {len(diagram.nodes)} nodes</summary>\n\n{block}\n</details>\n\n"
    return block


def render_markdown(
    plan: Plan, *, limit: int = MARKDOWN_LIMIT, source: str = "agora.yaml", diagram: Wiring | None = None, drift: bool = False
) -> str:
    """The PR comment: a hidden marker naming `source` first, a warning, a summary, a diagram, details."""
    s = plan.summary()
    head: list[str] = [marker(source, drift=drift) + "\n"]
    risky = [(s["delete"], "deletes"), (s["replace"], "replaces"), (s["restart"], "restarts")]
    risky_text = [f"{verb} {n}" for n, verb in risky if n]
    if risky_text and drift:
        head.append(f"> [!WARNING]\n> Drift: putting the account back {', '.join(risky_text)} resource(s).\n")
    elif risky_text:
        head.append(f"> [!WARNING]\n> This plan {', '.join(risky_text)} resource(s). Review before merging.\n")
    head.append(f"### agora-reconciler {'drift' if drift else 'plan'}\n")
    head.append(summary_line(plan, drift=drift) + "\n")
    head.append("| Action | Count |\n|---|---:|")
    head += [f"| {a.value} | {s[a.value]} |" for a in Action]
    head += [f"| unchanged | {s['unchanged']} |", f"| unmanaged | {s['unmanaged']} |", ""]
    adoption = _adoption_line(plan)
    if adoption:
        head.append(adoption + "\n")
    for note in plan.notes:
        head.append(f"- :information_source: {note}")
    for warning in plan.warnings:
        head.append(f"- :warning: {warning}")
    for error in plan.errors:
        head.append(f"- :x: {error}")
    text = "\n".join(head) + "\n" + ("\n" + _diagram(diagram) if plan.has_changes and diagram is not None and not diagram.empty else "")
    tail_note = "\n_Plan truncated to fit a comment: {n} more change(s) not shown. Run `agora-reconciler plan` for all of them._\n"
    shown = 0
    for kind in ("phone_number", "agent"):
        changes = [c for c in plan.changes if c.kind == kind]
        if not changes:
            continue
        opening = f"\n<details><summary>{KIND_TITLES[kind]}: {len(changes)} change(s)</summary>\n\n```diff\n"
        closing = "```\n\n</details>\n"
        body = ""
        budget = limit - len(text) - len(opening) - len(closing) - len(tail_note) - 20
        for change in changes:
            block = _markdown_change(change).replace("```", "'''") + "\n"
            if len(body) + len(block) > budget:
                break
            body += block
            shown += 1
        if body:
            text += opening + body + closing
        if shown < len(plan.changes) and len(text) > limit - len(tail_note) - 2000:
            break
    if shown < len(plan.changes):
        text += tail_note.format(n=len(plan.changes) - shown)
    return text


def _escape_property(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A").replace(":", "%3A").replace(",", "%2C")


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def render_github(plan: Plan) -> str:
    """`::warning` annotations, one per drifted resource, at its YAML line when it has one."""
    lines = []
    for change in plan.changes:
        message = _escape_data(f"{change.address}: {change.action.value}: {change.reason}")
        title = _escape_property(f"drift: {change.address}")
        if change.location is not None:
            lines.append(
                f"::warning file={_escape_property(change.location.file)},line={change.location.line},col={change.location.col},title={title}::{message}"
            )
        else:
            lines.append(f"::warning title={title}::{message}")
    for note in plan.notes:
        lines.append(f"::notice title=agora-reconciler::{_escape_data(note)}")
    for error in plan.errors:
        lines.append(f"::error title=agora-reconciler::{_escape_data(error)}")
    lines.append(f"::notice title=agora-reconciler::{_escape_data(summary_line(plan, drift=True))}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- validation results
def diagnostics_text(errors: Sequence[Diagnostic], warnings: Sequence[Diagnostic]) -> str:
    lines = [f"{w.file}:{w.line}:{w.col}: warning: {w.message}" for w in warnings]
    lines += [f"{e.file}:{e.line}:{e.col}: error: {e.message}" for e in errors]
    return "\n".join(lines) + ("\n" if lines else "")


def diagnostics_json(errors: Sequence[Diagnostic], warnings: Sequence[Diagnostic]) -> str:
    def one(d: Diagnostic) -> dict[str, Any]:
        return {"file": d.file, "line": d.line, "col": d.col, "message": d.message, "path": d.path}

    return json.dumps({"valid": not errors, "errors": [one(e) for e in errors], "warnings": [one(w) for w in warnings]}, indent=2) + "\n"


def diagnostics_github(errors: Sequence[Diagnostic], warnings: Sequence[Diagnostic], *, max_errors: int = 10) -> str:
    lines = []
    for kind, items in (("error", errors), ("warning", warnings)):
        for d in items[:max_errors]:
            lines.append(f"::{kind} file={_escape_property(d.file)},line={d.line},col={d.col}::{_escape_data(d.message)}")
        if len(items) > max_errors:
            lines.append(f"::{kind}::{len(items) - max_errors} more {kind}(s) not annotated; run agora-reconciler validate for all of them")
    return "\n".join(lines) + ("\n" if lines else "")
