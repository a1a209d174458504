"""`plan`, `drift` and `apply`: printing plans, progress while applying, Ctrl-C during an apply."""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .. import config, reconcile, render
from ..errors import ApprovalError, InterruptedApply
from ..plan import Plan
from ..secrets import redact
from .common import (
    EXIT_CHANGES,
    PATHS_HELP,
    VERBS,
    automation,
    common_options,
    err,
    flags_from,
    handles_errors,
    hint,
    note,
    open_session,
    out,
    use_color,
)

if TYPE_CHECKING:
    from ..executor import ChangeResult


def _markdown(plan: Plan, paths: tuple[str, ...], drift: bool) -> str:
    from .. import wiring  # only Markdown draws the wiring

    source = " ".join(paths) or config.DEFAULT_PATH
    return render.render_markdown(plan, source=source, diagram=wiring.of_plan(plan), drift=drift)


def _print_plan(plan: Plan, fmt: str, color: bool, paths: tuple[str, ...], *, drift: bool = False) -> None:
    if fmt == "json":
        out(render.render_json(plan))
    elif fmt == "markdown":
        out(_markdown(plan, paths, drift))
    elif fmt == "github":
        out(render.render_github(plan))
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            with open(summary, "a", encoding="utf-8") as fh:
                fh.write(redact(_markdown(plan, paths, drift)))
    else:
        out(render.render_text(plan, color=color, drift=drift))


@click.command(
    epilog=f"""{PATHS_HELP}

\b
Examples:
  agora-reconciler plan infra/agora
  agora-reconciler plan infra/agora --out plan.json --format markdown > plan.md"""
)
@click.argument("paths", nargs=-1)
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="Write the JSON plan here, for apply --plan.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
    help="text for people, json (schema: `schema --name plan`), markdown for a pull-request comment (starts with a hidden marker).",
)
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when there are changes (0: none, 1: error).")
@common_options
@handles_errors
def plan(paths: tuple[str, ...], out_file: str | None, fmt: str, detailed_exitcode: bool, **kwargs: Any) -> None:
    """Show what apply would change (reads the account, writes nothing)."""
    session = open_session(paths, flags_from(kwargs, "plan"))
    planned = reconcile.build_plan(session, digests=bool(out_file) or fmt == "json")
    _print_plan(planned.plan, fmt, use_color(kwargs["no_color"]), paths)
    if out_file:
        Path(out_file).write_text(render.render_json(planned.plan))
        note(f"Saved the plan to {out_file}.")
        where = " ".join(paths) + " " if paths else ""
        hint(f"Apply it with: agora-reconciler apply {where}--plan {out_file}")
    if planned.plan.errors:
        sys.exit(1)
    if detailed_exitcode and planned.plan.has_changes:
        sys.exit(EXIT_CHANGES)


@click.command(
    epilog=f"""{PATHS_HELP}

\b
Examples:
  agora-reconciler drift infra/agora
  agora-reconciler drift infra/agora --format github   # in a scheduled GitHub Actions job"""
)
@click.argument("paths", nargs=-1)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown", "github"]),
    default="text",
    show_default=True,
    help="text, json, markdown, or github: annotations at each drifted resource's YAML line plus the Markdown report in $GITHUB_STEP_SUMMARY.",
)
@common_options
@handles_errors
def drift(paths: tuple[str, ...], fmt: str, **kwargs: Any) -> None:
    """Check the account for drift (read-only): exit 0 in sync, 2 on drift, 1 on error."""
    session = open_session(paths, flags_from(kwargs, "drift"))
    planned = reconcile.build_plan(session, digests=fmt == "json")
    _print_plan(planned.plan, fmt, use_color(kwargs["no_color"]), paths, drift=True)
    if planned.plan.has_changes:
        sys.exit(EXIT_CHANGES)


# --------------------------------------------------------------------------- apply
class _Progress:
    """One line per completed change on stderr, or a progress bar on a TTY."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty() and not quiet and not automation()
        self.bar: Any = None

    def start(self, plan: Plan) -> None:
        if self.tty and len(plan.changes) > 1:
            self.bar = click.progressbar(length=len(plan.changes), label="Applying", file=sys.stderr)
            self.bar.__enter__()

    def __call__(self, result: ChangeResult) -> None:
        if self.bar is not None:
            if not result.skipped:  # an interrupted apply stops the bar where it was
                self.bar.update(1)
            if not result.ok and not result.skipped:
                err(f"\n{result.change.address}: failed: {result.error}")
            return
        if self.quiet:
            return
        if result.ok:
            detail = f" ({result.detail})" if result.detail else ""
            verb = "resumed" if result.change.resumes else VERBS[result.change.action.value]
            err(f"{result.change.address}: {verb}{detail}")
        elif not result.skipped:
            err(f"{result.change.address}: failed: {result.error}")

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


class _Interrupts:
    """Ctrl-C (SIGINT) and SIGTERM during `apply`.

    Until the changes start (reading, planning, the confirmation prompt) a signal aborts at once:
    nothing was sent. Once they run, the first signal lets the changes in flight finish and the
    ledger be saved (exit 128 + signal: 130, 143); a second one exits at once."""

    def __init__(self, stop: threading.Event, progress: _Progress | None = None) -> None:
        self.stop = stop
        self.progress = progress
        self.running = False
        self.signum: int | None = None

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)

    def handler(self, signum: int, frame: Any) -> None:
        if not self.running:
            self.signum = signum
            raise KeyboardInterrupt
        if self.stop.is_set():
            os._exit(128 + signum)
        self.signum = signum
        self.stop.set()
        below_bar = "\n" if self.progress is not None and self.progress.bar is not None else ""  # the bar keeps its line
        err(f"{below_bar}Interrupted: finishing the changes in flight and saving the ledger (Ctrl-C again to quit at once)...")

    def install(self) -> Callable[[], None]:
        previous = {signum: signal.signal(signum, self.handler) for signum in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

        return restore


def _ask(plan: Plan) -> bool:
    """The confirmation prompt: y/yes applies; n, no, an empty line or end of input (Ctrl-D) does not.

    Read with `select` in short slices rather than a blocking `input()`: a signal that arrives just
    before a blocking read would only be handled after the next line, so Ctrl-C (or SIGTERM) at
    the prompt would wait for Enter instead of aborting at once."""
    if automation():
        raise ApprovalError("CI is set, so apply does not ask: pass --auto-approve, or apply a saved plan with --plan")
    if not sys.stdin.isatty():
        raise ApprovalError("no terminal to confirm on: pass --auto-approve, or apply a saved plan with --plan")
    while True:
        click.echo(f"Apply these {len(plan.changes)} changes? [y/N]: ", nl=False, err=True)
        while not select.select([sys.stdin], [], [], 0.2)[0]:
            pass  # each slice returns to Python, which runs a pending signal handler
        line = sys.stdin.readline()
        if not line:
            click.echo("", err=True)
            return False
        answer = line.strip().lower()
        if answer in ("y", "yes", "n", "no", ""):
            return answer in ("y", "yes")
        click.echo("Error: invalid input", err=True)


@click.command(
    epilog=f"""{PATHS_HELP}

\b
Examples:
  agora-reconciler apply infra/agora                     # shows the plan, asks on a terminal
  agora-reconciler apply infra/agora --plan plan.json    # exactly a saved plan, refused if stale"""
)
@click.argument("paths", nargs=-1)
@click.option("--plan", "plan_file", type=click.Path(dir_okay=False), help="Apply this saved plan (refused when stale).")
@click.option("--auto-approve", is_flag=True, help="Do not ask for confirmation (needed without a terminal, and with CI set).")
@click.option("--allow-replace", is_flag=True, default=None, help="Allow delete + re-import of phone numbers.")
@click.option("--force", is_flag=True, help="Apply a plan that the safety thresholds refuse.")
@click.option("--lock-timeout", type=float, default=0.0, metavar="SECONDS", help="Wait this long for the ledger lock.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text, or json: what was applied, as one document on stdout.",
)
@common_options
@handles_errors
def apply(paths: tuple[str, ...], plan_file: str | None, auto_approve: bool, fmt: str, **kwargs: Any) -> None:
    """Make the account match the configuration."""
    flags = flags_from(kwargs, "apply")
    saved = reconcile.load_plan_file(plan_file, config.validate_plan_document) if plan_file else None
    session = open_session(paths, flags)
    color = use_color(kwargs["no_color"])
    progress = _Progress(kwargs["quiet"])

    stop = threading.Event()
    interrupts = _Interrupts(stop, progress)

    def show(plan: Plan) -> None:
        if saved is not None:
            interrupts.running = True  # a saved plan runs next: no prompt
        if fmt == "json":
            return
        if plan.has_changes or not kwargs["quiet"]:
            out(render.render_text(plan, color=color))
        progress.start(plan) if plan.has_changes and (auto_approve or saved is not None) else None

    def confirm(plan: Plan) -> bool:
        if not auto_approve:
            answer = _ask(plan)
            if not answer:
                return False
            progress.start(plan)
        interrupts.running = True
        return True

    restore = interrupts.install()
    try:
        outcome = reconcile.apply(session, saved=saved, confirm=confirm, on_plan=show, on_result=progress, stop=stop, digests=fmt == "json")
    except KeyboardInterrupt:
        progress.finish()
        err("Interrupted before any change was made: nothing was changed.")
        sys.exit(interrupts.exit_code)
    except InterruptedApply as exc:
        exc.exit_code = interrupts.exit_code
        raise
    finally:
        progress.finish()
        restore()
    counts = outcome.counts()
    if fmt == "json":
        out(json.dumps({"applied": counts, "adopted": outcome.adopted, "plan": outcome.plan.to_dict()}, indent=2) + "\n")
    if not outcome.plan.has_changes:
        note("Nothing to apply." + (f" Recorded {outcome.adopted} adopted resource(s) in the ledger." if outcome.adopted else ""))
        return
    done: dict[str, int] = {}
    for result in outcome.report.succeeded if outcome.report else []:
        verb = "resumed" if result.change.resumes else VERBS[result.change.action.value]
        done[verb] = done.get(verb, 0) + 1
    note(f"Apply complete: {', '.join(f'{n} {verb}' for verb, n in done.items()) or 'nothing changed'}.")
