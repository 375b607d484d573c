"""Ctrl+C and SIGTERM during a sweep: both become Tune's graceful stop; a second signal stops at once.

    python sweeps/lr_warmup.py      (then Ctrl+C: the sweep saves its state and prints the --resume command)
"""
from __future__ import annotations

import os
import signal
import threading
import time

ECHO_S = 2.0  # a SIGTERM this soon after the first is the same stop request, sent to the process and its group


class StopOnSignal:
    """SIGINT and SIGTERM both become Tune's own graceful stop (which it offers on SIGINT and SIGUSR1) while
    `fit` runs; before Tune has installed its handler, and on a second signal, they raise KeyboardInterrupt. A
    SIGTERM repeated within ECHO_S is not a second signal."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._saved: dict[int, object] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set from the main thread; Tune then leaves them alone too
        self._env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours forwards to Tune's (registered on SIGUSR1)
        self._saved = {s: signal.getsignal(s) for s in (*self.SIGNALS, signal.SIGUSR1)}
        self.arm()
        return self

    def arm(self) -> None:
        """(Re)install the handlers: connecting to Ray installs its C++ SIGTERM handler, which aborts the driver."""
        if self._saved:
            for s in self.SIGNALS:
                signal.signal(s, self._handle)

    def _handle(self, signum: int, frame) -> None:
        if signum == signal.SIGTERM == self.signum and time.monotonic() - self._first_at < ECHO_S:
            return  # the same request again: `timeout` signals the process, then its whole group
        tune_handler = signal.getsignal(signal.SIGUSR1)
        if self.signum is not None or not callable(tune_handler) or tune_handler is self._saved[signal.SIGUSR1]:
            self.signum, self._first_at = self.signum or signum, time.monotonic()
            raise KeyboardInterrupt  # a second signal, or Tune not running yet: stop now
        self.signum, self._first_at = signum, time.monotonic()
        # os.write, not print: a handler that prints while the main thread prints raises "reentrant call".
        os.write(2, f"\n{signal.Signals(signum).name}: stopping the trials and saving the sweep's state "
                    "(send it again to stop at once)\n".encode())
        tune_handler(signum, frame)

    def __exit__(self, *exc) -> None:
        for s, handler in self._saved.items():
            signal.signal(s, handler)
        if self._saved:
            if self._env is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = self._env
