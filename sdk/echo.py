"""Per-file errors echoed on the console, one line each, rate-limited (the full list stays in the
command's JSONL file)."""

from __future__ import annotations

import sys


class FileErrorEcho:
    """``echo(name, reason)`` prints ``robis-edge COMMAND: NAME: REASON`` on stderr for the first
    ``limit`` files, then one line saying where the others are."""

    def __init__(self, command: str, log_name: str, limit: int = 10) -> None:
        self.command, self.log_name, self.limit = command, log_name, limit
        self.count = 0

    def __call__(self, name: str, reason: object) -> None:
        self.count += 1
        if self.count <= self.limit:
            self._write(f"robis-edge {self.command}: {name}: {' '.join(str(reason).split())}")
        elif self.count == self.limit + 1:
            self._write(f"robis-edge {self.command}: more files failed; every error is in {self.log_name}")

    @staticmethod
    def _write(line: str) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(line, file=sys.stderr)  # does not tear a running progress bar
        except ImportError:
            print(line, file=sys.stderr, flush=True)
