"""A watchdog that ends what a CLI or SDK process started (Prefect's temporary server, the inference pool's fork server
and workers, multiprocessing's resource tracker, a Dask cluster) once that process is gone, however it ended
(kill -9 included). Issue #17: a killed run left about 690 MB of processes running.

The CLI starts it, and so does every `Curation` object, once per process. It marks the owner's environment
(`CURATION_WATCHDOG_OWNER`), so every process started afterwards from the owner carries the mark, a user's own
subprocesses included: they too are ended when the owner is gone.
"""

from __future__ import annotations

import os
import subprocess
import sys

WATCHDOG_OWNER = "CURATION_WATCHDOG_OWNER"  # the owner's pid; every process it starts inherits it
_running: subprocess.Popen[bytes] | None = None  # held for the process's life: its stdin is the watched pipe

# Run as `python -c` in a session of its own, given the owner's pid and the marker's name: stdlib and psutil only, so it
# starts in a blink. Its stdin is a pipe whose write end only the owner holds, so reading it returns (EOF) when the owner
# is gone, however it ended (kill -9 included). Then it ends every process that carries the owner's pid in the marker
# variable of its environment (all that the owner started, and what those started: Prefect's temporary server, the
# inference pool's fork server and workers, multiprocessing's resource tracker), and their children.
_WATCHDOG = """
import os, signal, sys
import psutil
owner, marker = sys.argv[1], sys.argv[2]
signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.stdin.buffer.read()
me, found = os.getpid(), {}
for p in psutil.process_iter():
    try:
        if p.pid != me and p.environ().get(marker) == owner:
            for q in [p, *p.children(recursive=True)]:
                found[q.pid] = q
    except psutil.Error:
        pass
for q in found.values():
    try:
        q.terminate()
    except psutil.Error:
        pass
gone, alive = psutil.wait_procs(list(found.values()), timeout=5)
for q in alive:
    try:
        q.kill()
    except psutil.Error:
        pass
"""


def start_watchdog() -> subprocess.Popen[bytes] | None:
    """Start the watchdog (`_WATCHDOG`) that ends what this process started once this process is gone (issue #17: a
    killed run left Prefect's server and the inference workers running). None when this process has one already."""
    global _running
    if os.environ.get(WATCHDOG_OWNER) == str(os.getpid()):
        return None
    os.environ[WATCHDOG_OWNER] = str(os.getpid())
    _running = subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), WATCHDOG_OWNER],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # neither Ctrl-C nor a closed terminal ends it before the owner's children
    )
    return _running
