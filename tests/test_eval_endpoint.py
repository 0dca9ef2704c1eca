"""The recording endpoint: agents written with the real ``openai`` SDK, or with ``httpx`` by
hand, call the model through ``client.base_url`` / ``client.api_key`` and every call is
cached, keyed and recorded as ``client.chat`` calls are. Real HTTP end to end: the agent's
SDK talks to the eval's endpoint on 127.0.0.1, which talks to the mock model server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from osmo_store import Repository
from osmo_store.eval.catalog import list_configs
from osmo_store.testing.mockserver import MockServer

from .evalproject import (
    ROWS,
    default_rows,
    forget_modules_under,
    lay_out_project,
    make_runner,
    write_rows,
)
from .waiting import Gate, wait_for_line, wait_until

SDK_AGENT = """\
import openai

def solve(messages, row, client):
    api = openai.OpenAI(base_url=client.base_url, api_key=client.api_key)
    reply = api.chat.completions.create(model=client.model, messages=messages)
    return [*messages, reply.choices[0].message.model_dump(exclude_none=True)]
"""

HTTPX_AGENT = """\
import httpx

def solve(messages, row, client):
    answer = httpx.post(
        client.base_url + "/chat/completions",
        headers={"Authorization": "Bearer " + client.api_key},
        json={"model": "anything", "messages": messages},
    )
    answer.raise_for_status()
    return [*messages, answer.json()["choices"][0]["message"]]
"""

CHAT_AGENT = """\
def solve(messages, row, client):
    return [*messages, client.chat(messages)]
"""


@pytest.fixture(scope="module")
def server():
    with MockServer() as srv:
        yield srv


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    yield lay_out_project(tmp_path, monkeypatch)
    forget_modules_under(tmp_path)


@pytest.fixture
def osmo_eval(store_path: Path, server: MockServer, project: Path, capsys):
    return make_runner(store_path, server, project, capsys)


@pytest.mark.parametrize("source", [SDK_AGENT, HTTPX_AGENT], ids=["openai-sdk", "httpx"])
def test_an_agent_calling_through_the_endpoint_pays_each_call_once(
    osmo_eval, project, source
) -> None:
    (project / "agent.py").write_text(source)
    first = osmo_eval("--agent", "agent.py:solve")
    assert first.code == 0, first.err
    assert first.calls == ROWS
    assert first.body["summary"]["metrics"]["exact"]["mean"] == 1.0
    assert osmo_eval("--agent", "agent.py:solve").calls == 0
    # A changed agent runs again, and each call it makes is answered from the store.
    (project / "agent.py").write_text(source + "CHANGED = 1\n")
    again = osmo_eval("--agent", "agent.py:solve")
    assert again.code == 0, again.err
    assert again.computed == ROWS and again.calls == 0


def test_an_sdk_call_has_the_key_of_the_same_client_chat_call(osmo_eval, project) -> None:
    (project / "chat_agent.py").write_text(CHAT_AGENT)
    assert osmo_eval("--agent", "chat_agent.py:solve").calls == ROWS
    (project / "agent.py").write_text(SDK_AGENT)
    sdk = osmo_eval("--agent", "agent.py:solve", "--temperature", "0")
    assert sdk.code == 0, sdk.err
    assert sdk.calls == ROWS  # --temperature joins the request the SDK sent
    (project / "agent2.py").write_text(SDK_AGENT + "ANOTHER = 1\n")
    assert osmo_eval("--agent", "agent2.py:solve").calls == 0


def test_an_upstream_500_reaches_the_sdk_as_a_500_after_the_evals_retries_only(
    osmo_eval, project, server
) -> None:
    (project / "agent.py").write_text(
        "import json, pathlib, openai\n\n"
        "def solve(messages, row, client):\n"
        "    api = openai.OpenAI(base_url=client.base_url, api_key=client.api_key)\n"
        "    try:\n"
        "        api.chat.completions.create(model=client.model, messages=messages)\n"
        "    except openai.APIStatusError as e:\n"
        "        seen = pathlib.Path(__file__).with_name('seen.jsonl')\n"
        "        with seen.open('a') as f:\n"
        "            f.write(json.dumps([e.status_code, e.body]) + '\\n')\n"
        "        raise\n"
        "    return messages\n"
    )
    server.fail_next(500, count=100)
    try:
        run = osmo_eval("--agent", "agent.py:solve", "--limit", "1", "--max-retries", "2")
    finally:
        server._faults.clear()
    assert run.calls == 3  # the eval's 1 + 2 retries; the SDK's own 2 retries do not multiply
    seen = [json.loads(line) for line in (project / "seen.jsonl").read_text().splitlines()]
    assert len(seen) == 1
    status, body = seen[0]
    assert status == 500
    assert "injected failure" in body["message"]


def test_a_call_with_a_wrong_or_finished_token_is_refused(osmo_eval, project) -> None:
    (project / "agent.py").write_text(
        "import json, pathlib, openai\n\n"
        "URLS = []\n\n"
        "def solve(messages, row, client):\n"
        "    seen = pathlib.Path(__file__).with_name('seen.jsonl')\n"
        "    wrong = client.base_url.replace('/r/', '/r/x')\n"
        "    tries = [(client.base_url, 'wrong-key'), (wrong, client.api_key)]\n"
        "    tries += [(u, client.api_key) for u in URLS]  # a rollout that has finished\n"
        "    URLS.append(client.base_url)\n"
        "    for url, key in tries:\n"
        "        api = openai.OpenAI(base_url=url, api_key=key, max_retries=0)\n"
        "        try:\n"
        "            api.chat.completions.create(model=client.model, messages=messages)\n"
        "        except openai.APIStatusError as e:\n"
        "            with seen.open('a') as f:\n"
        "                f.write(json.dumps([e.status_code, e.body]) + '\\n')\n"
        "    return messages\n"
    )
    run = osmo_eval("--agent", "agent.py:solve", "--limit", "2", "--concurrency", "1")
    assert run.code == 0, run.err
    assert run.calls == 0
    seen = [json.loads(line) for line in (project / "seen.jsonl").read_text().splitlines()]
    assert [s[0] for s in seen] == [401, 403, 401, 403, 403]
    assert all(isinstance(s[1].get("message"), str) for s in seen)


def test_a_fatal_upstream_answer_stops_the_eval(store_path, project, capsys) -> None:
    (project / "agent.py").write_text(SDK_AGENT)
    with MockServer(require_api_key="right") as srv:
        run = make_runner(store_path, srv, project, capsys)("--agent", "agent.py:solve")
    assert run.code == 1
    assert "refused the request: HTTP 401" in run.err


CURL_AGENT = """\
#!/bin/sh
# An agent in any language: the row on stdin, the model at $OPENAI_BASE_URL.
set -e
prompt=$(jq -r .user_prompt)
request=$(jq -n --arg p "$prompt" --arg m "$OSMO_MODEL" \\
    '{model: $m, messages: [{role: "user", content: $p}]}')
answer=$(curl -sS --fail -H "Authorization: Bearer $OPENAI_API_KEY" \\
    -H "Content-Type: application/json" -d "$request" "$OPENAI_BASE_URL/chat/completions")
printf '%s' "$answer" | jq --arg p "$prompt" '[{role: "user", content: $p}, .choices[0].message]'
"""

needs_curl = pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("jq")), reason="needs curl and jq"
)


@needs_curl
def test_an_agent_command_calls_through_the_endpoint_and_pays_each_call_once(
    osmo_eval, project
) -> None:
    (project / "agent.sh").write_text(CURL_AGENT)
    first = osmo_eval("--agent-cmd", "sh agent.sh")
    assert first.code == 0, first.err
    assert first.calls == ROWS and first.computed == ROWS
    assert first.body["summary"]["metrics"]["exact"]["mean"] == 1.0
    assert osmo_eval("--agent-cmd", "sh agent.sh").calls == 0
    # The script named by the command is part of the config: an edit runs it again, and
    # its calls are answered from the store.
    (project / "agent.sh").write_text(CURL_AGENT + "# changed\n")
    again = osmo_eval("--agent-cmd", "sh agent.sh")
    assert again.code == 0, again.err
    assert again.config_id != first.config_id
    assert again.computed == ROWS and again.calls == 0
    # So is the command itself.
    other = osmo_eval("--agent-cmd", "sh ./agent.sh")
    assert other.config_id not in (first.config_id, again.config_id)


def test_an_agent_command_that_fails_or_prints_no_messages_fails_its_run(
    osmo_eval, project
) -> None:
    (project / "agent.sh").write_text(
        "row=$(cat)\n"
        "case $row in\n"
        '  *"0 + 1"*) echo "first line" >&2; echo "boom: the tool broke" >&2; exit 3;;\n'
        '  *"1 + 2"*) echo "not json";;\n'
        '  *"2 + 3"*) echo \'{"answer": 5}\';;\n'
        '  *) echo \'[{"role": "assistant", "content": "x"}]\';;\n'
        "esac\n"
    )
    run = osmo_eval("--agent-cmd", "sh agent.sh")
    assert run.code == 0, run.err
    causes = {g["message"] for g in run.body["summary"]["failure_groups"]}
    assert any("exited with status 3" in c and "boom: the tool broke" in c for c in causes)
    assert any("not JSON" in c for c in causes)
    assert any("list of messages" in c for c in causes)
    assert sum(g["count"] for g in run.body["summary"]["failure_groups"]) == 3


def test_agent_and_agent_cmd_are_exclusive(osmo_eval, project) -> None:
    (project / "agent.py").write_text(SDK_AGENT)
    with pytest.raises(SystemExit) as exited:
        osmo_eval("--agent", "agent.py:solve", "--agent-cmd", "true")
    assert exited.value.code == 2


STREAM_AGENT = """\
import json, pathlib, openai

TOOLS = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]

def solve(messages, row, client):
    api = openai.OpenAI(base_url=client.base_url, api_key=client.api_key)
    stream = api.chat.completions.create(
        model=client.model, messages=messages, stream=True,
        stream_options={"include_usage": True}, tools=TOOLS, tool_choice="auto",
    )
    content, calls, chunks, usage = "", {}, 0, None
    for chunk in stream:
        chunks += 1
        usage = chunk.usage or usage
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                seen = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
                seen["id"] = call.id or seen["id"]
                seen["name"] += call.function.name or ""
                seen["arguments"] += call.function.arguments or ""
    heard = {"content": content, "calls": calls, "usage": usage.model_dump()}
    with pathlib.Path(__file__).with_name("heard.jsonl").open("a") as f:
        f.write(json.dumps([row["user_prompt"], heard, chunks > 3]) + "\\n")
    return [*messages, {"role": "assistant", "content": content}]
"""


def _tool_then_text(request: dict) -> dict:
    question = request["messages"][-1]["content"]
    return {
        "content": f"Let me add that up: {question} Calling the tool now, one moment.",
        "tool_calls": [{"id": "call_1", "function": {"name": "add",
                                                     "arguments": {"q": question, "x": [1, 2]}}}],
    }  # fmt: skip


def _heard(project: Path) -> dict[str, list]:
    lines = (project / "heard.jsonl").read_text().splitlines()
    (project / "heard.jsonl").unlink()
    return {prompt: [heard, many] for prompt, heard, many in map(json.loads, lines)}


def test_a_streamed_answer_replayed_from_the_store_reassembles_to_the_recorded_one(
    store_path, project, capsys
) -> None:
    (project / "agent.py").write_text(STREAM_AGENT)
    with MockServer(responder=_tool_then_text) as srv:
        run = make_runner(store_path, srv, project, capsys)
        first = run("--agent", "agent.py:solve", fns=("fns.py:exact",))
        assert first.code == 0, first.err
        assert first.calls == ROWS
        asked = srv.requests[0]
        assert asked["stream"] is True and asked["tool_choice"] == "auto"
        assert asked["tools"][0]["function"]["name"] == "add"
        live = _heard(project)
        (project / "agent.py").write_text(STREAM_AGENT + "CHANGED = 1\n")
        again = run("--agent", "agent.py:solve")
        assert again.code == 0, again.err
        assert again.calls == 0 and again.computed == ROWS
        replayed = _heard(project)
    assert replayed == live
    heard, many_chunks = next(iter(live.values()))
    assert many_chunks
    assert heard["content"].startswith("Let me add that up: What is")
    assert json.loads(heard["calls"]["0"]["arguments"])["x"] == [1, 2]
    assert heard["calls"]["0"]["name"] == "add" and heard["usage"]["total_tokens"] > 0


def test_completions_embeddings_models_and_request_options_go_through(
    osmo_eval, project, server
) -> None:
    (project / "agent.py").write_text(
        "import json, pathlib, httpx, openai\n\n"
        "def solve(messages, row, client):\n"
        "    api = openai.OpenAI(base_url=client.base_url, api_key=client.api_key)\n"
        "    models = [m.id for m in api.models.list()]\n"
        "    vectors = api.embeddings.create(model='e', input=[row['user_prompt'], 'x'])\n"
        "    text = api.completions.create(model='t', prompt=row['user_prompt'])\n"
        "    chat = api.chat.completions.create(\n"
        "        model=client.model, messages=messages, n=2, logprobs=True,\n"
        "        response_format={'type': 'json_object'})\n"
        "    other = httpx.post(client.base_url + '/images/generations', json={},\n"
        "                       headers={'Authorization': 'Bearer ' + client.api_key})\n"
        "    heard = [models, len(vectors.data), text.choices[0].text, len(chat.choices),\n"
        "             other.status_code]\n"
        "    with pathlib.Path(__file__).with_name('heard.jsonl').open('a') as f:\n"
        "        f.write(json.dumps([row['user_prompt'], heard, True]) + '\\n')\n"
        "    return [*messages, {'role': 'assistant', 'content': text.choices[0].text}]\n"
    )
    first = osmo_eval("--agent", "agent.py:solve")
    assert first.code == 0, first.err
    assert first.calls == 3 * ROWS
    asked = next(r for r in server.requests[-3:] if "messages" in r)
    assert asked["n"] == 2 and asked["logprobs"] is True
    assert asked["response_format"] == {"type": "json_object"}
    heard = _heard(project)
    assert heard["What is 2 + 3?"][0] == [["mock"], 2, "5", 2, 404]
    (project / "agent.py").write_text((project / "agent.py").read_text() + "CHANGED = 1\n")
    again = osmo_eval("--agent", "agent.py:solve")
    assert again.code == 0, again.err
    assert again.calls == 0 and again.computed == ROWS
    assert _heard(project) == heard


STEPS = 3
SDK_STEPS_AGENT = f"""\
import openai

def solve(messages, row, client):
    api = openai.OpenAI(base_url=client.base_url, api_key=client.api_key)
    for step in range({STEPS}):
        convo = messages + [{{"role": "user", "content": f"step {{step}}"}}]
        reply = api.chat.completions.create(model=client.model, messages=convo)
    return convo + [reply.choices[0].message.model_dump(exclude_none=True)]
"""
CURL_STEPS_AGENT = f"""\
set -e
prompt=$(jq -r .user_prompt)
for step in $(seq 0 {STEPS - 1}); do
    request=$(jq -n --arg p "$prompt" --arg s "step $step" \\
        '{{model: "m", messages: [{{role: "user", content: $p}}, {{role: "user", content: $s}}]}}')
    answer=$(curl -sS --fail -H "Authorization: Bearer $OPENAI_API_KEY" \\
        -H "Content-Type: application/json" -d "$request" "$OPENAI_BASE_URL/chat/completions")
done
printf '%s' "$answer" | jq '[.choices[0].message]'
"""


@pytest.mark.parametrize(
    "agent",
    [
        pytest.param(("agent.py", SDK_STEPS_AGENT, ("--agent", "agent.py:solve")), id="sdk"),
        pytest.param(
            ("agent.sh", CURL_STEPS_AGENT, ("--agent-cmd", "sh agent.sh")),
            id="agent-cmd",
            marks=needs_curl,
        ),
    ],
)
def test_a_sigkill_mid_eval_re_asks_only_the_calls_in_flight(
    osmo_bin: str, tmp_path: Path, agent: tuple[str, str, tuple[str, ...]]
) -> None:
    """Each call through the endpoint is recorded once answered: killed while every rollout
    waits on its last call, the resumed eval makes only those."""
    from .test_eval_crash import cached_entries, eval_cmd, killed, recorded

    name, source, flags = agent
    project = tmp_path / "project"
    project.mkdir()
    write_rows(project / "data.jsonl", default_rows())
    (project / "fns.py").write_text(
        "def exact(solution_str, ground_truth, extra_info):\n    return 1.0\n"
    )
    (project / name).write_text(source)
    release = threading.Event()

    def responder(request: dict) -> str:
        if request["messages"][-1]["content"] == f"step {STEPS - 1}":
            release.wait(60)  # the last step hangs until the eval is killed
        return "ok"

    store = tmp_path / "store"
    with MockServer(responder=responder) as srv:
        cmd = [*eval_cmd(osmo_bin, store, srv.base_url), *flags, "--concurrency", str(ROWS)]
        proc = subprocess.Popen(cmd, cwd=project, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        answered = ROWS * (STEPS - 1)
        wait_until(
            lambda: cached_entries(store) >= answered and srv.calls == ROWS * STEPS,
            what="the agents' answered calls being recorded, the last ones asked",
            proc=proc,
        )
        killed(proc)
        release.set()
        assert recorded(store)[0] == 0  # no run finished
        wait_until(srv.settled, what="the server reading every request sent")
        before = srv.calls
        r = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        body = json.loads(r.stdout)
        assert body["summary"]["runs"] == ROWS and body["session"]["model_calls"] == ROWS
        assert srv.calls - before == ROWS


def test_the_endpoint_speaks_http_as_curl_and_sdks_do() -> None:
    """Bodies curl sends with ``Expect: 100-continue``, keep-alive, and the requests the
    small server refuses (a chunked body, a malformed request line) with a status."""
    from osmo_store.eval.endpoint import Answer, RecordingEndpoint

    asked: list[dict] = []

    def complete(api: str, fields: dict, transport: dict) -> Answer:
        asked.append(fields)
        return Answer(
            {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]}
        )

    endpoint = RecordingEndpoint("m")
    try:
        with endpoint.rollout(complete) as session:
            big = json.dumps({"model": "x", "messages": [{"role": "user", "content": "y" * 5000}]})
            if shutil.which("curl"):
                done = subprocess.run(
                    ["curl", "-sS", "-H", f"Authorization: Bearer {session.api_key}",
                     "-H", "Content-Type: application/json", "-d", big,
                     session.base_url + "/chat/completions"],
                    capture_output=True, text=True, timeout=60,
                )  # fmt: skip
                assert json.loads(done.stdout)["choices"][0]["message"]["content"] == "hi"
                assert asked[-1]["messages"][0]["content"] == "y" * 5000
            with httpx.Client(base_url=session.base_url) as http:
                auth = {"Authorization": f"Bearer {session.api_key}"}
                for _ in range(3):  # one connection, kept alive
                    assert http.get("/models", headers=auth).json()["data"][0]["id"] == "m"
                chunked = http.post("/chat/completions", headers=auth, content=iter([big.encode()]))
                assert chunked.status_code == 411
            port = urlsplit(session.base_url).port
            with socket.create_connection(("127.0.0.1", port)) as raw:
                raw.sendall(b"nonsense\r\n\r\n")
                assert raw.recv(100).startswith(b"HTTP/1.1 400 ")
    finally:
        endpoint.close()


@needs_curl
def test_ctrl_c_lets_agent_commands_in_flight_finish_their_runs(
    osmo_bin: str, tmp_path: Path
) -> None:
    """Ctrl-C at a terminal signals the whole foreground process group: the agent programs
    must not die of it, or the runs in flight (already paid for) would be failed runs that a
    plain re-run does not retry."""
    from .test_eval_crash import eval_cmd, recorded

    project = tmp_path / "project"
    project.mkdir()
    write_rows(project / "data.jsonl", default_rows())
    (project / "fns.py").write_text(
        "def exact(solution_str, ground_truth, extra_info):\n"
        "    return solution_str.strip() == ground_truth\n"
    )
    write_rows(project / "data.jsonl", default_rows(12))  # more than 2 + 4 runs
    (project / "agent.sh").write_text(CURL_AGENT)
    store = tmp_path / "store"
    with Gate(2) as gate, MockServer(responder=gate) as srv:
        cmd = [*eval_cmd(osmo_bin, store, srv.base_url), "--agent-cmd", "sh agent.sh"]
        # A session of its own, as a terminal's job is: the signal goes to its group only.
        proc = subprocess.Popen(cmd, cwd=project, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # fmt: skip
        wait_until(lambda: gate.held == 4, what="4 agent commands waiting on the model",
                   proc=proc)  # fmt: skip
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.stderr is not None
        wait_for_line(proc.stderr, proc, "osmo: stopping")
        gate.release()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
    done, status = recorded(store)
    assert status == "interrupted" and done >= 6  # 2 before the gate, 4 in flight
    with Repository.open(store) as repo:
        config = list_configs(repo)[0]
        assert config.counts.get("failed", 0) == 0


def test_an_agent_calling_the_endpoint_without_a_model_stops_the_eval(osmo_eval, project) -> None:
    (project / "agent.py").write_text(SDK_AGENT.replace("model=client.model", "model='x'"))
    run = osmo_eval("--agent", "agent.py:solve", model=None)
    assert run.code == 1
    assert "no model was given" in run.err


def test_a_new_answer_reaches_the_agent_as_the_model_sent_it_and_a_stored_one_as_json() -> None:
    """A non-streamed answer is passed on as the model's bytes (not decoded and encoded
    again: that was two thirds of the endpoint's dispatch CPU per call); replayed from the
    store, the same answer comes back as JSON that decodes to it."""
    from osmo_store.eval.client import ChatClient
    from osmo_store.eval.config import ModelSpec
    from osmo_store.eval.endpoint import RecordingEndpoint
    from osmo_store.eval.localhttp import LocalHTTPServer, Reply
    from osmo_store.eval.solver import AgentClient, ModelCaller, StoreLookup

    # Spaced out and in an order of its own: bytes json.dumps would never write.
    sent = (
        b'{ "usage" : {"total_tokens": 3},\n  "choices": [ {"index": 0, "finish_reason": "stop",'
        b' "message": {"content": "caf\\u00e9", "role": "assistant"}} ], "id": "c-1" }'
    )
    model = LocalHTTPServer(lambda method, target, headers, body: Reply(200, sent))
    url = f"http://127.0.0.1:{model.port}/v1"
    caller = ModelCaller(
        StoreLookup(Repository.memory()), ChatClient(url, api_key="k"), ModelSpec("m", url)
    )
    endpoint = RecordingEndpoint("m")
    request = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    heard = []
    try:
        for _ in range(2):  # two rollouts asking the same: the second from the store
            agent = AgentClient(caller, 0, {}, None, endpoint=endpoint)
            with agent.endpoint, httpx.Client() as http:
                answer = http.post(
                    agent.base_url + "/chat/completions",
                    headers={"Authorization": f"Bearer {agent.api_key}"},
                    json=request,
                )
            assert answer.status_code == 200
            heard.append(answer.content)
    finally:
        endpoint.close()
        model.close()
        caller.client.close()  # type: ignore[union-attr]
    assert caller.calls_made == 1
    assert heard[0] == sent
    assert json.loads(heard[1]) == json.loads(sent)
