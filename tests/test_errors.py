"""Tests for resnet_repro.errors: the machine's refusals and usage errors are one line and an exit status."""

import errno
import os

import pytest

from resnet_repro.cli import main
from resnet_repro.errors import EXIT_CTRL_C, EXIT_USER_ERROR, OneLineParser, exit_status


def raising(exc: BaseException):
    def action():
        raise exc

    return action


@pytest.mark.parametrize(
    "code, remedy", [(errno.EROFS, "make it writable"), (errno.ENOSPC, "free space")], ids=["read-only", "disk full"]
)
def test_exit_status_cannot_write_is_one_line_naming_the_path(code, remedy, capsys):
    where = "/scratch/runs/resnet20-s0/checkpoints/last.ckpt"
    assert exit_status("resnet-repro train", raising(OSError(code, os.strerror(code), where))) == EXIT_USER_ERROR
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and captured.out == "", captured
    assert lines[0].startswith(f"resnet-repro train: error: cannot write {where}: {os.strerror(code)}; {remedy}")
    assert "--resume" in lines[0]


def test_exit_status_permission_denied_is_one_line_for_reads_and_writes_alike(capsys):
    where = "/data/imagenet/train"
    error = OSError(errno.EACCES, os.strerror(errno.EACCES), where)
    assert exit_status("resnet-repro train", raising(error)) == EXIT_USER_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"resnet-repro train: error: cannot access {where}: Permission denied; fix its permissions or use another path"
    ]


@pytest.mark.parametrize("code", [errno.ENOTDIR, errno.ENAMETOOLONG], ids=["not a directory", "name too long"])
def test_exit_status_a_path_that_cannot_be_one_is_one_line_naming_it(code, capsys):
    where = "runs/" + "x" * 4000
    assert exit_status("resnet-repro run", raising(OSError(code, os.strerror(code), where))) == EXIT_USER_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("resnet-repro run: error: cannot use runs/xxxx"), lines
    assert lines[0].endswith(f"xxxx: {os.strerror(code)}; name another path") and len(lines[0]) < 200


def test_exit_status_reraises_other_os_errors():
    """Only "cannot write here" is the user's to fix; a missing file or a broken pipe stays a traceback."""
    with pytest.raises(FileNotFoundError):
        exit_status("resnet-repro train", raising(FileNotFoundError(errno.ENOENT, "No such file", "/x")))


def test_exit_status_ctrl_c_is_130_with_one_line(capsys):
    assert exit_status("resnet-repro run", raising(KeyboardInterrupt())) == EXIT_CTRL_C == 130
    assert capsys.readouterr().err.strip().splitlines() == ["resnet-repro run: interrupted"]


@pytest.mark.parametrize(
    "argv, hint",
    [
        (["train"], "(see resnet-repro train --help)"),
        (["train", "resnet8", "--bogus"], "(see resnet-repro train --help)"),
        (["train", "resnet8", "--iterations", "many"], "(see resnet-repro train --help)"),
        (["bogus"], "(see resnet-repro --help)"),
        ([], "(see resnet-repro --help)"),
    ],
    ids=["missing model", "unknown flag", "bad value", "unknown command", "no command"],
)
def test_cli_usage_error_is_one_line_pointing_at_help(argv, hint, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == EXIT_USER_ERROR
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, f"a usage block instead of one line: {captured.err!r}"
    assert lines[0].startswith("resnet-repro") and ": error: " in lines[0] and lines[0].endswith(hint), lines[0]
    assert captured.out == ""


def test_one_line_parser_error_names_its_prog(capsys):
    parser = OneLineParser(prog="experiments/fig1.py")
    parser.add_argument("--jobs", type=int)
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--jobs", "two"])
    assert exited.value.code == EXIT_USER_ERROR
    assert capsys.readouterr().err.splitlines() == [
        "experiments/fig1.py: error: argument --jobs: invalid int value: 'two' (see experiments/fig1.py --help)"
    ]
