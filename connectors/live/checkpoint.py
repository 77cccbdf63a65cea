"""Where a live connector stands, kept in ``DATA_DIR/connectors/<name>.json``.

Written atomically (temp file in the same folder, fsync, rename), so a crash leaves
either the previous checkpoint or the new one, never half a file. The runner writes it
only after the sink confirmed every record sent so far, so the position never runs
ahead of what is durable in Kafka.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from connectors.checkpoint import write_json_atomic
from connectors.live.stream import LiveError
from stream_app.records import iso, utc_now

VERSION = 1


class CheckpointError(LiveError):
    """The checkpoint file exists but cannot be used (message names the file)."""


def checkpoint_path(data_dir: Path, name: str) -> Path:
    return Path(data_dir) / "connectors" / f"{name}.json"


def load_checkpoint(path: Path, network: str) -> dict[str, Any] | None:
    """The saved state, or None when this connector never saved one."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable ({exc}); "
                              "move it away to start from the live edge") from None
    if not isinstance(state, dict) or state.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path} has an unknown format; "
                              "move it away to start from the live edge")
    if state.get("network") != network:
        raise CheckpointError(f"checkpoint {path} belongs to a {state.get('network')!r} "
                              f"connector, not {network!r}; use another --name")
    return state


def save_checkpoint(path: Path, network: str, state: dict[str, Any]) -> None:
    write_json_atomic(path, {"version": VERSION, "network": network,
                             "saved_at": iso(utc_now()), **state})
