"""`loa serve --processes N`: N server processes on one port, for a campaign's last-day rush.

One Python process uses one core; the conversation store, locks, sender leases and rate limits
already live in Redis, so more processes simply share the work. The supervisor (the process
the operator started) runs no server itself:

- it starts N children (`loa serve` with `LOA_PROCESS_INDEX=i`), each listening on the same
  host and port with SO_REUSEPORT, so the kernel spreads connections across them;
- process 0 also runs the deployment's one-of-a-kind jobs (Telegram long polls, proactive
  Zalo token refresh, channel health checks; `Settings.runs_singletons`);
- a child that dies is started again (after a short pause; the inbox kept its work), unless it
  keeps dying right after starting — then the supervisor stops everything and exits 1;
- SIGTERM/SIGINT stop the children gracefully and then the supervisor; SIGHUP is passed on
  (reload flows.yaml); children get SIGTERM if the supervisor itself is killed (Linux).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bots.settings import Settings

log = logging.getLogger("loa.supervisor")

RESTART_PAUSE = 1.0  # seconds before a dead child is started again
QUICK_DEATH = 10.0  # a child dying sooner than this after its start counts as failing to start
MAX_QUICK_DEATHS = 3  # …this many times in a row for one slot: give up
STOP_GRACE = 30.0  # seconds children get to finish after SIGTERM before SIGKILL


@dataclass(slots=True)
class _Slot:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None


def child_command(settings: Settings, port: int) -> list[str]:
    """The command line of one child: the same `loa serve`, with what the supervisor decided."""
    return [
        sys.executable, "-m", "bots.cli", "serve",
        "--host", settings.host,
        "--port", str(port),
        "--config", str(settings.config),
        "--processes", str(settings.processes),
    ]


def free_port(host: str = "127.0.0.1") -> int:
    """A free port the system picks: every child then listens on the same one (when port 0 is
    asked); tests and the soak bench use it for the servers they start."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host if host not in ("", "0.0.0.0") else "127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the supervisor dies (Linux prctl), so a killed
    supervisor leaves no orphans holding the port."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the children outlive a killed supervisor (stop them by hand)


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        *,
        command: Callable[[int], Sequence[str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.port = settings.port or free_port(settings.host)
        self._command = command or (lambda _index: child_command(settings, self.port))
        self._clock = clock
        self.slots = [_Slot(i) for i in range(settings.processes)]
        self.stopping = False
        self.failed = False
        self._hangup = False

    def _start(self, slot: _Slot) -> None:
        env = dict(os.environ, LOA_PROCESS_INDEX=str(slot.index))
        slot.process = subprocess.Popen(
            list(self._command(slot.index)), env=env, preexec_fn=_die_with_parent
        )
        slot.started = self._clock()
        slot.restart_at = None
        log.info("process %d started (pid %d)", slot.index, slot.process.pid)

    def request_stop(self, *_: object) -> None:
        self.stopping = True

    def request_reload(self, *_: object) -> None:
        self._hangup = True

    def run(self, poll: float = 0.2) -> int:
        for slot in self.slots:
            self._start(slot)
        while not self.stopping:
            if self._hangup:
                self._hangup = False
                self._signal(signal.SIGHUP)
            for slot in self.slots:
                self._watch(slot)
            if self.failed:
                break
            time.sleep(poll)
        self._stop_all()
        return 1 if self.failed else 0

    def _watch(self, slot: _Slot) -> None:
        now = self._clock()
        process = slot.process
        if process is not None and process.poll() is not None:
            code = process.returncode
            slot.process = None
            if now - slot.started < QUICK_DEATH:
                slot.quick_deaths += 1
            else:
                slot.quick_deaths = 0
            if slot.quick_deaths >= MAX_QUICK_DEATHS:
                log.error(
                    "process %d keeps stopping right after it starts (exit %s): stopping Loa",
                    slot.index, code,
                )
                self.failed = True
                return
            log.warning(
                "process %d stopped (exit %s); starting it again in %.0f s",
                slot.index, code, RESTART_PAUSE,
            )
            slot.restart_at = now + RESTART_PAUSE
        if slot.process is None and slot.restart_at is not None and now >= slot.restart_at:
            self._start(slot)

    def _signal(self, signum: int) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.send_signal(signum)

    def _stop_all(self) -> None:
        self._signal(signal.SIGTERM)
        deadline = self._clock() + STOP_GRACE
        for slot in self.slots:
            process = slot.process
            if process is None:
                continue
            try:
                process.wait(timeout=max(0.1, deadline - self._clock()))
            except subprocess.TimeoutExpired:
                log.warning("process %d did not stop in time: killed", slot.index)
                process.kill()
                process.wait()


def supervise(settings: Settings) -> int:
    """Run `settings.processes` server processes until SIGTERM/SIGINT; the exit code."""
    supervisor = Supervisor(settings)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    signal.signal(signal.SIGHUP, supervisor.request_reload)
    print(
        f"Loa chạy {settings.processes} tiến trình tại cổng {supervisor.port} "
        "(dừng: Ctrl+C hoặc SIGTERM).",
        flush=True,
    )
    code = supervisor.run()
    print("Loa đã dừng." if code == 0 else "Loa đã dừng vì một tiến trình không chạy được.",
          flush=True)
    return code


__all__ = ["Supervisor", "child_command", "free_port", "supervise"]
