"""``--audit-log F``: one line per connection (address, role, outcome), per refused action
(what and why) and per job submitted, resumed, cancelled or deleted. Lines are
``time event key=value ...`` with values quoted as JSON strings where they need it; a
password is never among them (nor any startup parameter but the user name).
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from typing import Any

MAX_SQL = 500  # characters of a refused statement kept


class Audit:
    """Appends to the audit file (line-buffered, so each line is there when the event is)."""

    def __init__(self, path: str | None):
        self._file = open(path, "a", encoding="utf-8", buffering=1) if path else None  # noqa: SIM115
        self._lock = threading.Lock()

    def write(self, event: str, **fields: Any) -> None:
        if self._file is None:
            return
        parts = [datetime.now(timezone.utc).isoformat(timespec="milliseconds"), event]
        for key, value in fields.items():
            text = str(value)
            if key == "sql" and len(text) > MAX_SQL:
                text = text[:MAX_SQL] + "..."
            plain = text and all(c.isalnum() or c in "-_.:/@[]'" for c in text)
            parts.append(f"{key}={text if plain else json.dumps(text)}")
        with self._lock:
            self._file.write(" ".join(parts) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
