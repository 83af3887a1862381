"""Start the Panel dashboard (`panel serve dashboards/`) as a subprocess."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

# The folder of the installed curation.dashboards package: the checkout's dashboards/ in an editable install, the
# wheel's curation/dashboards/ otherwise (docs/architecture.md, "Packaging").
_SPEC = importlib.util.find_spec("curation.dashboards")
DASHBOARDS = Path(_SPEC.origin).parent if _SPEC and _SPEC.origin else Path(__file__).resolve().parents[2] / "dashboards"


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
