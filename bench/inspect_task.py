"""The kill benchmark's eval as an inspect_ai task (bench_durable.py section i).

Run by inspect_ai's own interpreter, never osmo's: inspect_ai is not a dependency of osmo,
it is installed in a venv of its own (see bench/README.md, issue 11). The dataset is the
synthetic JSONL osmo evaluates (``BENCH_DATASET``), each row asked as osmo asks it (the
system prompt, then the question) and scored the way ``examples/scoring.py:exact_match``
scores it (the answer, stripped, equals the ground truth, stripped).

``python inspect_task.py kept LOG`` prints, as JSON, the ids of the samples a killed eval
kept: those flushed to its log, and those completed in its sample buffer (what
``inspect eval-retry`` recovers and does not run again). ``python inspect_task.py done
LOG_DIR`` prints the samples completed by the newest successful log there.
"""

from __future__ import annotations

import json
import os
import sys

from inspect_ai import Task, task
from inspect_ai.dataset import Sample, json_dataset
from inspect_ai.model import ChatMessageSystem, ChatMessageUser
from inspect_ai.scorer import CORRECT, INCORRECT, Score, Target, accuracy, scorer
from inspect_ai.solver import TaskState, generate


def _sample(row: dict) -> Sample:
    return Sample(
        id=row["id"],
        input=[
            ChatMessageSystem(content=row["system_prompt"]),
            ChatMessageUser(content=row["user_prompt"]),
        ],
        target=str(row["ground_truth"]),
    )


@scorer(metrics=[accuracy()])
def exact_match():
    async def score(state: TaskState, target: Target) -> Score:
        answer = state.output.completion
        ok = answer.strip() == target.text.strip()
        return Score(value=CORRECT if ok else INCORRECT, answer=answer)

    return score


@task
def arithmetic() -> Task:
    return Task(
        dataset=json_dataset(os.environ["BENCH_DATASET"], _sample),
        solver=generate(),
        scorer=exact_match(),
    )


def kept(log: str) -> list[str]:
    """Ids of the samples a crashed log keeps: flushed to it, or completed in its buffer."""
    import anyio

    # What `inspect eval-retry` reads before it re-runs anything (inspect_ai.log._recover).
    from inspect_ai.log._recover import read_buffer_recovery_data, read_crashed_eval_log

    ids = {str(s.id) for s in anyio.run(read_crashed_eval_log, log).summaries}
    buffer = read_buffer_recovery_data(log)
    if buffer is not None:
        ids |= {str(s.id) for s in buffer.completed}
    return sorted(ids)


def done(log_dir: str) -> int:
    """Samples completed by the newest successful log in ``log_dir`` (0 if none)."""
    from inspect_ai.log import list_eval_logs, read_eval_log

    for info in list_eval_logs(log_dir, descending=True):
        log = read_eval_log(info, header_only=True)
        if log.status == "success" and log.results is not None:
            return log.results.completed_samples
    return 0


if __name__ == "__main__" and sys.argv[1:2] == ["kept"]:
    print(json.dumps(kept(sys.argv[2])))
elif __name__ == "__main__" and sys.argv[1:2] == ["done"]:
    print(done(sys.argv[2]))
