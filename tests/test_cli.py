"""The `userlm` console script: user mistakes are one sentence and exit 2, bugs point at a log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from userlm.cli import COMMANDS, main


def test_every_command_answers_help(capsys):
    for command in COMMANDS:
        try:
            main([command, "--help"])
        except SystemExit as exit:  # argparse's --help
            assert exit.code == 0
        assert "usage: userlm " + command in capsys.readouterr().out


def test_a_user_mistake_is_one_sentence_and_exit_code_2(capsys):
    assert main(["prep", "--no-such-key", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("userlm prep: Unknown key `--no-such-key`")
    assert main(["frobnicate"]) == 2


def test_an_internal_error_says_where_its_traceback_is(tmp_path, monkeypatch, capsys):
    """A bug (here: a stage function that raises) prints one line naming the log; the log holds the traceback."""
    monkeypatch.setenv("USERLM_CACHE", str(tmp_path))
    module = tmp_path / "broken_stage.py"
    module.write_text("def main(words):\n    raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(COMMANDS, "broken", ("broken_stage:main", "a stage with a bug"))
    assert main(["broken", "x=1"]) == 1
    err = capsys.readouterr().err.strip()
    assert "unexpected error (RuntimeError: boom)" in err and "\n" not in err
    log = Path(err.split("the traceback is in ")[1].split(". Please")[0])
    text = log.read_text()
    assert (
        text.startswith("userlm broken x=1\n")
        and "Traceback (most recent call last)" in text
        and "RuntimeError: boom" in text
    )


def test_the_silenced_messages_are_dropped_and_nothing_else(caplog):
    """Each silenced message, raised on purpose through its library's logger or as a warning, does not show;
    another message of the same logger does. Runs on any machine, whatever the libraries print there."""
    import logging
    import warnings

    from userlm.quiet import LOG_MESSAGES, WARNING_MESSAGES, silence_unactionable_warnings

    caplog.set_level(logging.INFO)
    for logger, text in LOG_MESSAGES:
        logging.getLogger(logger).warning("a message with %s in it", text)
        logging.getLogger(logger).warning("something a user can act on")
    shown = [record.getMessage() for record in caplog.records]
    assert shown == ["something a user can act on"] * len(LOG_MESSAGES)
    for message in WARNING_MESSAGES:
        with warnings.catch_warnings(record=True) as caught:  # pytest resets warning filters per test: set ours again
            warnings.simplefilter("always")
            silence_unactionable_warnings()
            warnings.warn(message.replace("\\", ""), UserWarning, stacklevel=2)
            warnings.warn("another warning", UserWarning, stacklevel=2)
        assert [str(w.message) for w in caught] == ["another warning"]


def test_importing_userlm_silences_the_bitsandbytes_kernels_warning():
    """The real library's warning, where this machine makes bitsandbytes print it (it does on some CPUs only)."""
    import pytest

    bare = subprocess.run([sys.executable, "-c", "import bitsandbytes"], capture_output=True, text=True, check=True)
    if "kernels-community" not in bare.stderr:
        pytest.skip("bitsandbytes prints no kernels-community warning on this CPU; the filter is tested above")
    result = subprocess.run(
        [sys.executable, "-c", "import userlm, bitsandbytes"], capture_output=True, text=True, check=True
    )
    assert "kernels-community" not in result.stderr
