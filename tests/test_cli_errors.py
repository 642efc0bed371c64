"""What a command prints when it fails: one line for a user mistake; for anything else one line that names the
error, where it happened and its path, with the traceback kept in a file that line names."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator.execution import working_in
from trainables.config import MissingInput


def run(main, capsys) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as ended:
        cli.run_main(main)
    return ended.value.code, capsys.readouterr().err.strip().splitlines()


def test_a_vanished_working_folder_is_an_internal_error_with_its_cause_and_traceback(tmp_path, capsys, monkeypatch):
    sweep, job = tmp_path / "sweep", tmp_path / "job"
    job.mkdir()
    monkeypatch.chdir(job)

    def main(argv):
        with working_in(sweep):  # the sweep's folder takes the traceback
            os.chdir(job)
            job.rmdir()  # as a Ray job's folder unpacked again underneath the driver
            return os.path.relpath("/a/b")

    code, lines = run(main, capsys)
    assert code == cli.INTERNAL_ERROR and len(lines) == 1
    line = lines[0]
    assert line.startswith("error: FileNotFoundError in abspath (") and "posixpath" in line  # relpath's getcwd
    assert "No such file or directory" in line
    saved = Path(line.rsplit("the traceback is in ", 1)[1])
    assert saved.parent == sweep and "Traceback (most recent call last)" in saved.read_text()
    assert "os.path.relpath" in saved.read_text()


def test_an_os_error_names_its_path_and_the_project_frame_that_called(tmp_path, capsys):
    from trainables import storage

    missing = tmp_path / "nowhere" / "file.txt"
    code, lines = run(lambda argv: storage.download(str(missing), tmp_path / "copy.txt"), capsys)
    assert code == 1 and len(lines) == 1
    assert "FileNotFoundError in " in lines[0] and "called from trainables/storage.py:" in lines[0]
    assert str(missing) in lines[0]
    saved = Path(lines[0].rsplit("the traceback is in ", 1)[1])
    assert saved.is_file() and "storage.py" in saved.read_text()


def test_a_missing_input_the_user_named_stays_one_line_without_a_traceback(capsys):
    def main(argv):
        raise MissingInput("weights file not found: w.pt (give a local state_dict file; nothing is downloaded)")

    code, lines = run(main, capsys)
    assert code == 2 and lines == [
        "error: weights file not found: w.pt (give a local state_dict file; nothing is downloaded)"
    ]


@pytest.mark.parametrize("door", ["sweep", "train", "report", "sync", "teacher_check"])
def test_help_describes_the_command_in_whole_sentences_without_repeating_its_usage(door, capsys):
    module = importlib.import_module(f"orchestrator.{door}")
    with pytest.raises(SystemExit):
        module.main(["--help"])
    text = capsys.readouterr().out
    description = " ".join(text.split("\n\n")[1].split())  # the paragraph after the usage
    assert description.endswith((".", "?")), description
    assert "python -m" not in description, description


@pytest.mark.parametrize("option", [["--tracking-uri", "sqlite:///x.db"], ["--skip-data-check"]])
def test_teacher_check_offers_no_option_it_would_ignore(option, capsys):
    from orchestrator import teacher_check

    with pytest.raises(SystemExit) as info:
        teacher_check.parse_args(["spec.yaml", *option])
    assert info.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
