"""agora-reconciler: declarative phone numbers and long-running agents for Agora Conversational AI."""

from __future__ import annotations

__version__ = "0.1.0"
