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
