"""The store's state: the records behind one lock, the emulator clock, settings and the data file.

`StoreState` is the base of `Store`: it holds what the API remembers and how it is saved.
`session()` wraps every request: with a data file shared between processes (`endpoint: local`)
it takes the file lock, re-reads the file if another process changed it, and the writes made
during the request land in the file before the lock is let go.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from .persistence import DataFile, DataFileError
from .records import DEMO_PIPELINES, Agent, Call, Settings


class StoreState:
    """All emulator state behind one lock."""

    def __init__(self, data_file: str | os.PathLike[str] | None = None, *, exclusive: bool = False) -> None:
        self.lock = threading.RLock()
        self.defaults = Settings()  # what `reset` returns to (the `serve` options)
        self.settings = Settings()
        self.clock_offset = 0.0
        self._empty()
        self.data = DataFile(data_file) if data_file else None
        if self.data is not None and exclusive:
            self.data.hold()  # `emulator serve --data`: the only writer for its whole life
            try:
                self._load()
            except DataFileError:
                self.data.release()
                raise

    def _empty(self) -> None:
        self.pipelines: dict[str, str] = dict(DEMO_PIPELINES)
        self.numbers: dict[str, dict[str, Any]] = {}
        self.agents: dict[str, Agent] = {}
        self.calls: dict[str, Call] = {}
        self.used_names: dict[str, set[str]] = {}
        self.quiet_channels: set[tuple[str, str]] = set()  # (app_id, channel) without remote users
        self.conflicted: set[tuple[str, str]] = set()  # (operation, number) already refused by conflict-409

    def close(self) -> None:
        """Save and let go of the data file."""
        if self.data is not None:
            with self.lock, self.data.transaction():
                self.persist()
            self.data.release()

    # ----------------------------------------------------------------- requests
    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """One request's worth of exclusive access (see the module docstring)."""
        with self.lock:
            if self.data is None:
                yield
                return
            with self.data.transaction():
                if self.data.changed():
                    self._load()
                yield

    # ----------------------------------------------------------------- clock and settings
    def now(self) -> float:
        return time.time() + self.clock_offset

    def advance_clock(self, seconds: float) -> float:
        with self.lock:
            self.clock_offset += float(seconds)
            self.persist()
            return self.now()

    def has(self, variant: str) -> bool:
        return variant in self.settings.variants

    def fresh_settings(self) -> Settings:
        return copy.copy(self.defaults)

    # ----------------------------------------------------------------- the data file
    def persist(self) -> None:
        """Write the store to the data file (atomically), if there is one."""
        if self.data is None:
            return
        with self.lock:
            self.data.write(
                {
                    "version": 1,
                    "clock_offset": self.clock_offset,
                    "pipelines": self.pipelines,
                    "numbers": self.numbers,
                    "agents": [a.__dict__ for a in self.agents.values()],
                    "calls": [c.__dict__ for c in self.calls.values()],
                    "used_names": {k: sorted(names) for k, names in self.used_names.items()},
                    "quiet_channels": sorted([a, c] for a, c in self.quiet_channels),
                }
            )

    def _load(self) -> None:
        assert self.data is not None
        doc = self.data.read()
        self._empty()
        if doc is None:
            self.clock_offset = 0.0
            return
        try:
            self.clock_offset = float(doc.get("clock_offset", 0.0))
            self.pipelines = {str(k): str(name) for k, name in doc.get("pipelines", DEMO_PIPELINES).items()}
            self.numbers = {str(k): dict(rec) for k, rec in doc.get("numbers", {}).items()}
            self.agents = {a["agent_id"]: Agent(**a) for a in doc.get("agents", [])}
            self.calls = {c["agent_id"]: Call(**c) for c in doc.get("calls", [])}
            self.used_names = {str(k): set(names) for k, names in doc.get("used_names", {}).items()}
            self.quiet_channels = {(str(a), str(c)) for a, c in doc.get("quiet_channels", [])}
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            self._empty()
            raise DataFileError(f"{self.data.path} is not an emulator data file ({type(exc).__name__}: {exc})") from None
