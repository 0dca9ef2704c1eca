"""An agent that is a program (``--agent-cmd "COMMAND"``): any language, any SDK.

Per rollout the command runs through the shell with ``OPENAI_BASE_URL`` and
``OPENAI_API_KEY`` naming the eval's recording endpoint (``OSMO_MODEL`` the model to ask
for, ``OSMO_RUN_INDEX`` the sample index), the row as JSON on standard input. It prints
the final messages as JSON on standard output: a list of message objects, or an object with
a ``messages`` list. A non-zero exit or other output is a failed run, with the end of what
the program wrote to standard error as its error.

The config's identity covers the command as typed and the content of every file it names
by path (``sh agent.sh``, ``python3 ./agent.py``): editing the script starts a new config.
What a script reads or imports beyond that is not seen; declare it with ``--key-file``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

from ..errors import AgentError, UsageError
from ..hashing import blake3_hex, canonical_json
from .code import declared_values
from .config import CodeRef

#: characters of the program's standard error kept in a failed run's error
STDERR_TAIL_CHARS = 1000


class CommandAgent:
    """``agent(messages, row, client)`` that runs ``command`` once per call."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __repr__(self) -> str:
        return f"CommandAgent({self.command!r})"

    def __call__(self, messages: list[dict[str, Any]], row: dict[str, Any], client: Any) -> Any:
        env = dict(os.environ)
        env["OPENAI_BASE_URL"] = client.base_url
        env["OPENAI_API_KEY"] = client.api_key
        env["OSMO_RUN_INDEX"] = str(client.run_index)
        if client.model is not None:
            env["OSMO_MODEL"] = client.model
        done = subprocess.run(
            self.command,
            shell=True,
            input=json.dumps(row).encode(),
            capture_output=True,
            env=env,
            check=False,
            # Not in the eval's process group: a Ctrl-C at the terminal stops the eval, which
            # lets the runs in flight finish (they are paid for); killing their programs
            # would make them failed runs that a plain re-run does not retry.
            start_new_session=True,
        )
        if done.returncode != 0:
            why = f"exited with status {done.returncode}"
            if done.returncode < 0:
                why = f"was killed by signal {-done.returncode}"
            raise AgentError(f"agent command {why}: {_tail(done.stderr)}")
        try:
            result = json.loads(done.stdout)
        except ValueError:
            shown = _tail(done.stdout) or "(nothing)"
            raise AgentError(f"agent command printed something that is not JSON: {shown}") from None
        if isinstance(result, dict) and "messages" in result:
            result = result["messages"]
        if not isinstance(result, list):
            raise AgentError(
                f"agent command printed a JSON {type(result).__name__}: expected a list of "
                "messages or an object with a 'messages' list"
            )
        return result


def load_command_agent(
    command: str,
    *,
    key_env: tuple[str, ...] = (),
    key_files: tuple[tuple[str, Path], ...] = (),
) -> tuple[CommandAgent, CodeRef]:
    """The agent for ``command`` and its identity: the command and the files it names."""
    if not command.strip():
        raise UsageError("--agent-cmd needs a command")
    try:
        words = shlex.split(command)
    except ValueError as e:
        raise UsageError(f"--agent-cmd {command!r}: {e}") from None
    files: dict[str, str] = {}
    source = None
    for word in words:
        path = Path(word)
        # Files the command names from here; a program it finds on $PATH is the system's.
        if word.startswith("-") or not path.is_file():
            continue
        files[word] = blake3_hex(path.read_bytes())
        source = source or str(path.resolve())
    fingerprint = blake3_hex(canonical_json({"command": command, "files": files}))
    depends = declared_values(None, source, key_env, key_files)
    return CommandAgent(command), CodeRef(command, "command", fingerprint, source, depends)


def _tail(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    if len(text) > STDERR_TAIL_CHARS:
        text = "…" + text[-STDERR_TAIL_CHARS:]
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())
