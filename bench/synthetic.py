"""The synthetic arithmetic dataset the eval and sync benchmarks both run."""

from __future__ import annotations

import json
import random
from pathlib import Path

SYSTEM = "You are a careful calculator. Answer with the number only."


def write_dataset(path: Path, rows: int, *, seed: str, row_id: str) -> Path:
    """``rows`` distinct questions (one model call per run); ``row_id`` formats the index
    into each row's id, e.g. ``"row-{:07d}"``."""
    rnd = random.Random(seed)
    with open(path, "w") as f:
        for i in range(rows):
            a, b = i, rnd.randrange(1000)
            op = rnd.choice("+*-")
            val = a + b if op == "+" else a * b if op == "*" else a - b
            row = {
                "id": row_id.format(i),
                "user_prompt": f"What is {a} {op} {b}?",
                "ground_truth": str(val),
                "difficulty": "simple",
                "system_prompt": SYSTEM,
            }
            f.write(json.dumps(row) + "\n")
    return path
