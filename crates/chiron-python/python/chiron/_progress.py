"""A training job's progress on the owner's screen: a tqdm bar (a widget in notebooks) when
tqdm is installed, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, Dict, Optional

#: Plain mode repeats an unchanged status line at most this often (seconds).
_STATUS_EVERY = 30.0


def _tqdm() -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


class Progress:
    """Epochs done out of `total` (None when unknown), the metrics of each epoch as a line,
    notes, and a status (the private-mode countdown, the current step)."""

    def __init__(self, total: Optional[int], enabled: bool = True) -> None:
        self._enabled = enabled
        self._total = total
        self._done = 0
        self._status = ""
        self._said_at = 0.0
        tqdm = _tqdm() if enabled else None
        self._bar = (
            tqdm(total=total, unit="epoch", desc="training", dynamic_ncols=True)
            if tqdm is not None
            else None
        )

    def note(self, text: str) -> None:
        """A line of its own (a metric line, a note)."""
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def status(self, text: str, *, plain: bool = False) -> None:
        """What is happening now, beside the bar. Without a bar, only a `plain` status is
        printed: when its words change, and every half minute while they do not."""
        if not self._enabled:
            return
        if self._bar is not None:
            if text != self._status:
                self._bar.set_description_str(text)
        elif plain:
            now = time.monotonic()
            # Only the words matter for "changed": a countdown changes every second.
            head = text.split(":")[0]
            if head != self._status.split(":")[0] or now - self._said_at >= _STATUS_EVERY:
                print(text, file=sys.stderr, flush=True)
                self._said_at = now
        self._status = text

    def epochs_done(self, done: int, metrics: Dict[str, float]) -> None:
        """`done` epochs have ended; `metrics` are the latest figures."""
        if self._total is not None:
            done = min(done, self._total)
        if self._bar is not None and done > self._done:
            self._bar.update(done - self._done)
        if self._bar is not None and metrics:
            self._bar.set_postfix({k: f"{v:.4f}" for k, v in metrics.items()}, refresh=True)
        self._done = max(self._done, done)

    def close(self, finished: bool) -> None:
        """Ends the display; a finished job fills the bar."""
        if self._bar is None:
            return
        if finished and self._total is not None and self._done < self._total:
            self._bar.update(self._total - self._done)
        self._bar.set_description_str("done" if finished else "stopped")
        self._bar.close()
