"""Progress bars (tqdm) for long operations, shown only on request."""

from __future__ import annotations

from typing import Any, Optional


class RunProgress:
    """A tqdm bar over restarts, fed by the core's (stage, run, step) ticks.

    Used as the core's callback; when disabled it is never handed to the core at all.
    """

    def __init__(self, total: int, desc: str) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, desc=desc, unit="run", dynamic_ncols=True)
        self._run = 0

    def __call__(self, stage: str, run: int, step: int) -> None:
        if run > self._run:
            self._bar.update(run - self._run)
            self._run = run
        self._bar.set_postfix_str(f"{stage} step {step}", refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.update(self._bar.total - self._bar.n)
        self._bar.close()


def make_progress(enabled: Any, total: int, desc: str) -> Optional[RunProgress]:
    return RunProgress(total, desc) if enabled else None
