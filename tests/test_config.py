"""agents/config.py stands alone: it imports without the agent's file (no import cycle), and the
``--help`` it builds still opens with the agent file's own description, in-process and as a script."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agents import config, ppo_continual

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DESCRIPTION = ppo_continual.__doc__.split("\n\n")[0]


def test_config_imports_without_loading_the_agent_file():
    code = "import sys, agents.config; print('agents.ppo_continual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_help_description_is_the_agent_files_docstring(capsys):
    assert DESCRIPTION.startswith("Continual PPO")  # the first paragraph, not the whole docstring
    with pytest.raises(SystemExit) as exc:
        config.parse_args(ppo_continual.Args, ["--help"])
    assert exc.value.code == 0
    in_process = " ".join(capsys.readouterr().out.split())
    assert DESCRIPTION in in_process and "One agent learns" not in in_process
    script = subprocess.run([sys.executable, os.path.join(ROOT, "agents", "ppo_continual.py"), "--help"], cwd=ROOT,
                            capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert script.returncode == 0 and DESCRIPTION in " ".join(script.stdout.split())
