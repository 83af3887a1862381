"""Start the Panel dashboard (`panel serve dashboards/`) as a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DASHBOARDS = Path(__file__).resolve().parent.parent / "dashboards"


def launch_viewer(port: int = 5006, show: bool = True) -> int:
    """Serve the dashboard on 127.0.0.1 and block until it stops.

    Args:
        port: the local port to serve on.
        show: open a browser tab on start.

    Returns:
        The exit code of `panel serve`.
    """
    if not (DASHBOARDS / "main.py").exists():
        raise FileNotFoundError(f"the dashboard is not at {DASHBOARDS}; launch_viewer needs a source checkout")
    command = [
        sys.executable, "-m", "panel", "serve", str(DASHBOARDS), "--port", str(port), "--address", "127.0.0.1",
        f"--allow-websocket-origin=127.0.0.1:{port}", f"--allow-websocket-origin=localhost:{port}",
    ]
    if show:
        command.append("--show")
    with subprocess.Popen(command, cwd=DASHBOARDS.parent) as process:
        try:
            return process.wait()
        except KeyboardInterrupt:
            process.terminate()
            return process.wait()
