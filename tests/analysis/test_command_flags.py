"""pytest tests/analysis/test_command_flags.py — every command parses its flags the same way: a bad flag is one `error:`
line that names the command's --help, exit code 2, no usage block.
"""
from __future__ import annotations

import pytest

from analysis import report, scaling_law, transfer
from sweeps.engine import sync

COMMANDS = {"python -m analysis.report": report.main, "python -m analysis.transfer": transfer.main,
            "python -m analysis.scaling_law": scaling_law.main, "python -m sweeps.engine.sync": sync.main}


@pytest.mark.parametrize("prog", COMMANDS)
@pytest.mark.parametrize("flags", [["--no-such-flag"], ["--experiment"]], ids=["unknown", "missing-value"])
def test_a_bad_flag_is_one_line_and_exit_2(prog, flags, capsys):
    with pytest.raises(SystemExit) as stopped:
        COMMANDS[prog](flags)
    assert stopped.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith(f"see {prog} --help"), lines
