"""The sink's chaos switch, for fault-injection tests only (off unless configured).

The embedded ClickHouse runs inside the sink process, so nothing outside it can make
its inserts fail. ``DALLOSH_SINK_CHAOS_FILE`` names a file; while that file exists,
every insert attempt fails with :class:`ChaosInsertError`, a transient error:

- content ``refuse`` (or empty): the insert fails before anything is sent;
- content ``lost-ack``: the insert is performed, then fails as if the reply were lost,
  which is what the per-batch deduplication token protects against.

A test (or an operator rehearsing an incident) creates and removes the file to open
and close the fault window. The switch is checked with one ``stat`` per insert attempt.
"""

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path

log = logging.getLogger(__name__)


class ChaosMode(str, Enum):
    REFUSE = "refuse"
    LOST_ACK = "lost-ack"


class ChaosSwitch:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            log.warning("sink chaos switch armed: inserts fail while %s exists", path)

    def mode(self) -> ChaosMode | None:
        """The fault to inject on this attempt, or None (the normal case)."""
        if self.path is None:
            return None
        try:
            content = self.path.read_text().strip()
        except (FileNotFoundError, IsADirectoryError):
            return None
        return ChaosMode.LOST_ACK if content == ChaosMode.LOST_ACK.value else ChaosMode.REFUSE
