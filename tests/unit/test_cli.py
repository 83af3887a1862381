"""The CLI's error line: one line, whatever the error's text (issue #17)."""

from __future__ import annotations

from typer.testing import CliRunner

from curation import cli


def test_an_error_is_one_line_even_when_the_storage_answered_xml():
    xml = "cannot list container 'c': HttpResponseError: Forbidden\n<?xml version=\"1.0\"?>\n<Error>\n  <Code>X</Code>\n</Error>"
    assert cli.one_line(ValueError(xml)) == (
        "cannot list container 'c': HttpResponseError: Forbidden <?xml version=\"1.0\"?> <Error> <Code>X</Code> </Error>"
    )


def test_wrong_input_gets_one_error_line_and_exit_code_1(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATION_DATA_ROOT", str(tmp_path))
    result = CliRunner().invoke(cli.app, ["curate", "--name", "x"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == ["error: give exactly one of --container or --local"]


def test_debug_is_a_global_option(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATION_DATA_ROOT", str(tmp_path))
    result = CliRunner().invoke(cli.app, ["--debug", "curate", "--name", "x"])
    assert result.exit_code == 1
    assert "error: give exactly one of --container or --local" in result.output


def test_without_debug_prefect_console_shows_no_run_failure_and_no_traceback():
    """What the CLI's filter lets through Prefect's console: progress, never a traceback or a run's failure report
    (the CLI prints the failure itself, once)."""
    import io
    import logging

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(cli._NoRunFailureTracebacks())
    try:
        raise ValueError("boom: the reason")
    except ValueError:
        import sys

        exc_info = sys.exc_info()

    def emit(name: str, level: int, msg: str, with_traceback: bool = False) -> None:
        handler.handle(logging.LogRecord(name, level, __file__, 1, msg, None, exc_info if with_traceback else None))

    emit("prefect.flow_runs", logging.INFO, "Beginning flow run 'x' for flow 'curate-dataset'")
    emit("prefect.flow_runs", logging.ERROR, "Encountered exception during execution: boom", with_traceback=True)
    emit("prefect.task_runs", logging.ERROR, "Finished in state Failed('boom: the reason')")
    emit("prefect.flow_runs", logging.INFO, "Finished in state Failed('Flow run encountered an exception: boom')")
    emit("prefect.task_runs", logging.INFO, "Finished in state Completed()")
    emit("prefect.engine", logging.WARNING, "something else", with_traceback=True)
    shown = stream.getvalue()
    assert shown.splitlines() == ["Beginning flow run 'x' for flow 'curate-dataset'", "Finished in state Completed()",
                                  "something else"]
    assert "Traceback" not in shown and "boom" not in shown


def test_the_watchdog_ends_what_its_owner_started_when_the_owner_is_killed(tmp_path):
    """A process that started the watchdog, then a child, is killed with SIGKILL: the child ends too."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    owner_code = (
        "import subprocess, sys\n"
        "from curation.cli import start_watchdog\n"
        "start_watchdog()\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print(child.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    owner = subprocess.Popen([sys.executable, "-c", owner_code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env=env, start_new_session=True)
    child = psutil.Process(int(owner.stdout.readline()))  # the event: the owner printed its child's pid
    try:
        assert child.is_running()
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        deadline = time.monotonic() + 180  # a deadline only
        while child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, f"the owner's child {child.pid} outlived it"
            time.sleep(0.05)
    finally:
        if child.is_running():
            child.kill()
