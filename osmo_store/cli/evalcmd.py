"""``osmo eval``: run an eval on the store; ``osmo eval cache ...``, ``osmo log``, ``osmo show``."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import TYPE_CHECKING, Any

from ..eval import DEFAULT_BASE_URL
from ..eval.outputs import check_writable
from .argtypes import finite_float, nonneg_float, nonneg_int, positive_float, positive_int
from .common import (
    EXIT_ALL_FAILED,
    EXIT_BELOW_THRESHOLD,
    EXIT_INTERRUPTED,
    err,
    open_repo,
    out,
)

if TYPE_CHECKING:
    from ..eval.config import EvalConfig
    from ..eval.prepare import PreparedEval
    from ..eval.runner import EvalOutcome
    from ..repo import Repository

# The eval machinery (requests, the runner) is imported when an eval runs, not when any
# osmo command starts: CLI start-up time is part of every `osmo eval cache ls`.


#: ``osmo eval``'s subcommands, by the module that registers them
SUBCOMMAND_MODULES = {
    "cachecmd": ("cache",),
    "evalviews": ("show", "diff", "export", "verify", "label", "report"),
    "explaincmd": ("explain",),
}


def register(
    sub: argparse._SubParsersAction, common: argparse.ArgumentParser, subcommand: str | None = None
) -> None:
    """``osmo eval`` and its subcommands. When ``subcommand`` names one of them, only that
    one's parser is built (with none of the eval's own flags): parsing ``osmo eval cache
    ls`` needs nothing else, and every flag built costs start-up time."""
    only = next((m for m, names in SUBCOMMAND_MODULES.items() if subcommand in names), None)
    p = sub.add_parser(
        "eval",
        parents=[common],
        usage=eval_usage() + "\n       %(prog)s COMMAND [ARGS]",
        help="run a dataset through a model or agent, score it, record every run",
        description="Run an eval on the store; re-running resumes and reuses stored results. "
        "`osmo eval cache ...` manages stored configs; show, diff, export, verify, label and "
        "report look at them; `osmo eval explain ...` shows what a run would reuse and why. Exit "
        f"status: 0 when the eval ran to its end, {EXIT_ALL_FAILED} when every run failed, "
        f"{EXIT_BELOW_THRESHOLD} when the score is below --fail-under, {EXIT_INTERRUPTED} when "
        "interrupted, 1 on an error, 2 for bad arguments.",
    )
    p.set_defaults(func=cmd_eval, needs_repo=False)
    if only is None:
        add_eval_arguments(p)
    # prog: else argparse names the subcommands after the usage given above
    csub = p.add_subparsers(dest="eval_command", metavar="COMMAND", prog=p.prog)
    if only in (None, "cachecmd"):
        from . import cachecmd

        cachecmd.register_eval_cache(csub, common)
    if only in (None, "evalviews"):
        from . import evalviews

        evalviews.register(csub, common)
    if only in (None, "explaincmd"):
        from . import explaincmd

        explaincmd.register_explain(csub, common, add_eval_arguments, build_config, eval_usage())


def eval_usage() -> str:
    """The usage line of ``osmo eval`` (and ``explain``): the arguments an eval needs, not
    every flag (those are listed below it, by group)."""
    needs = ("--model NAME", "--agent MODULE:ATTR", "--agent-cmd COMMAND")
    return "\n       ".join(
        f"%(prog)s -d FILE {solver} --eval-fn MODULE:FN [OPTIONS]" for solver in needs
    )


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``osmo eval``, which ``osmo eval explain`` takes too. A missing one
    is a usage error of ``p`` (see ``build_config``)."""
    p.set_defaults(eval_parser=p)
    d = p.add_argument_group("data and solver")
    d.add_argument("-d", "--dataset", metavar="FILE", help=".jsonl, .json, .csv or .parquet")
    d.add_argument("--model", metavar="NAME", help="model name sent to the endpoint")
    d.add_argument(
        "--base-url",
        metavar="URL",
        help=f"OpenAI-compatible API root ($OSMO_BASE_URL, else {DEFAULT_BASE_URL})",
    )
    d.add_argument("--api-key", metavar="KEY", help="else $OSMO_API_KEY, else $OPENAI_API_KEY")
    d.add_argument(
        "--model-id",
        metavar="ID",
        help="name the endpoint part of the model's identity yourself: the cache then "
        "survives the endpoint moving (the model name always counts)",
    )
    agent = d.add_mutually_exclusive_group()
    agent.add_argument(
        "--agent",
        metavar="MODULE:ATTR",
        help="a callable (messages, row, client) -> final messages; sync or async",
    )
    agent.add_argument(
        "--agent-cmd",
        metavar="COMMAND",
        help="an agent that is a program: run per run with OPENAI_BASE_URL and "
        "OPENAI_API_KEY set to the eval's recording endpoint, the row as JSON on stdin; "
        "prints the final messages as JSON",
    )
    d.add_argument(
        "--eval-fn",
        metavar="MODULE:FN",
        action="append",
        default=[],
        help="scoring function (repeatable); (solution_str, ground_truth, "
        "extra_info) or (messages, ground_truth, metadata)",
    )
    d.add_argument(
        "--key-env",
        metavar="NAME",
        action="append",
        default=[],
        help="an environment variable the agent or eval functions read: its value joins "
        "their cache key (repeatable; unset counts as a value)",
    )
    d.add_argument(
        "--key-file",
        metavar="PATH",
        action="append",
        default=[],
        help="a file the agent or eval functions read: its content joins their cache key "
        "(repeatable)",
    )
    s = p.add_argument_group("sampling")
    s.add_argument(
        "--n", type=positive_int, default=1, metavar="N", help="runs per row (default 1)"
    )
    s.add_argument(
        "--pass-threshold",
        type=finite_float,
        default=1.0,
        metavar="T",
        help="a run passes when its primary score >= T (default 1.0)",
    )
    s.add_argument(
        "--temperature", type=finite_float, metavar="X", help="sent to the model (default: its own)"
    )
    s.add_argument(
        "--max-tokens",
        type=positive_int,
        metavar="N",
        help="longest answer, in tokens, sent to the model (default: its own)",
    )
    s.add_argument(
        "--top-p", type=finite_float, metavar="X", help="nucleus sampling, sent to the model"
    )
    s.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="sample i asks with seed N + i, so the n samples differ and each replays",
    )
    s.add_argument("--max-turns", type=positive_int, metavar="N", help="passed to the agent")
    s.add_argument("--limit", type=nonneg_int, metavar="N", help="only the first N rows")
    s.add_argument("--offset", type=nonneg_int, default=0, metavar="N", help="skip N rows")
    r = p.add_argument_group("running")
    r.add_argument(
        "--shard",
        type=_shard,
        metavar="I/N",
        help="run only shard I of N (1-based; rows split by content); push the shards of "
        "one config to one remote to assemble it",
    )
    r.add_argument(
        "--concurrency",
        type=positive_int,
        default=8,
        metavar="C",
        help="runs in flight (default 8)",
    )
    r.add_argument(
        "--timeout",
        type=positive_float,
        default=60.0,
        metavar="S",
        help="per model request, seconds (default 60)",
    )
    r.add_argument(
        "--max-retries",
        type=nonneg_int,
        default=5,
        metavar="R",
        help="retries on 429/5xx/timeouts (default 5)",
    )
    mode = r.add_mutually_exclusive_group()
    mode.add_argument(
        "--fresh",
        action="store_true",
        help="start this config over, computing every run anew (old state stays in the "
        "reflog until gc)",
    )
    mode.add_argument(
        "--retry-failed",
        action="store_true",
        help="re-run exactly the failed runs; a failure is replaced only by a success",
    )
    upgrade = r.add_mutually_exclusive_group()
    upgrade.add_argument(
        "--adopt-old-keys",
        action="store_true",
        help="runs of this eval recorded by an older osmo (older key schema): take them as "
        "results of this config, as they are",
    )
    upgrade.add_argument(
        "--recompute",
        action="store_true",
        help="runs of this eval recorded by an older osmo: compute them anew",
    )
    o = p.add_argument_group("output")
    o.add_argument(
        "--log-samples",
        nargs="?",
        const="",
        metavar="FILE",
        help="write one JSON line per run (default file: samples-<config>.jsonl, "
        "in --output-path if given)",
    )
    o.add_argument("--output-path", metavar="DIR", help="write results JSON and samples JSONL here")
    o.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="FILE.json: one JSON file (config, summary, runs); FILE.jsonl, .csv or .parquet: "
        "one row per sample, as osmo eval export writes",
    )
    o.add_argument("--json", action="store_true", help="print the summary as JSON")
    o.add_argument(
        "--label",
        metavar="NAME",
        help="name the config (shown and filtered by osmo eval cache ls; kept by later runs)",
    )
    o.add_argument(
        "--fail-under",
        type=finite_float,
        metavar="SCORE",
        help=f"exit {EXIT_BELOW_THRESHOLD} when the primary score (its mean over scored runs) "
        "is below SCORE, for CI",
    )
    o.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    o.add_argument(
        "--progress-interval",
        type=nonneg_float,
        default=5.0,
        metavar="S",
        help="off a terminal, print a progress line every S seconds (default 5; 0: at every "
        "commit)",
    )


def _check_output_paths(args: argparse.Namespace, short: str) -> None:
    """Refuse, before anything runs, output paths that could not be written afterwards
    (``short``: the config id as the file names osmo chooses carry it)."""
    from pathlib import Path

    wanted = [(args.output_path, "--output-path", True), (args.output, "-o", False)]
    if args.output_path:
        for name in (f"results-{short}.json", f"samples-{short}.jsonl"):
            wanted.append((str(Path(args.output_path) / name), "--output-path", False))
    if args.log_samples is not None:
        default = Path(args.output_path or ".") / f"samples-{short}.jsonl"
        wanted.append((args.log_samples or str(default), "--log-samples", False))
    for text, flag, is_dir in wanted:
        if text:
            check_writable(text, flag, is_dir=is_dir)
    if args.output:
        from .report import output_format

        output_format(args.output)  # a suffix it cannot write is refused now, not after


def _shard(text: str) -> tuple[int, int]:
    i, sep, n = text.partition("/")
    try:
        index, count = int(i), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N such as 1/3, got {text!r}") from None
    if not sep or count < 1 or not 1 <= index <= count:
        raise argparse.ArgumentTypeError(f"expected I/N with 1 <= I <= N, got {text!r}")
    return index, count


def build_config(args: argparse.Namespace) -> PreparedEval:
    """The flags as the library's inputs: everything loaded and checked before anything
    runs or is stored."""
    from ..eval.config import SamplingParams
    from ..eval.prepare import prepare_eval

    # Checked here, not by argparse: `osmo eval COMMAND` takes none of them. Missing, they
    # are usage errors as argparse reports its own: the usage, one line, exit status 2.
    usage_error = args.eval_parser.error
    if not args.dataset:
        usage_error("the following arguments are required: -d/--dataset")
    if not args.model and not args.agent and args.agent_cmd is None:
        usage_error("one of the arguments --model --agent --agent-cmd is required")
    if not args.eval_fn:
        usage_error("the following arguments are required: --eval-fn")
    return prepare_eval(
        args.dataset,
        args.eval_fn,
        model=args.model or None,
        base_url=args.base_url,
        model_id=args.model_id,
        agent=args.agent,
        agent_cmd=args.agent_cmd,
        params=SamplingParams(args.temperature, args.max_tokens, args.top_p, args.seed),
        n=args.n,
        max_turns=args.max_turns,
        limit=args.limit,
        offset=args.offset,
        key_env=args.key_env,
        key_files=args.key_file,
    )


def cmd_eval(args: argparse.Namespace, repo: None) -> int:
    if args.eval_command:
        return args.cache_func(args)
    from ..errors import StoppedWaiting
    from ..eval import heap
    from ..eval.catalog import check_label
    from ..eval.launch import ClientSettings, launch, lock_timeout_from_env, recorder_from_env
    from ..eval.runner import EvalOptions
    from .progress import ProgressDisplay

    # Here, not in the runner: this process is the eval's for the rest of its life, which
    # a program calling the Python API is not (glibc cannot undo it). Before any thread.
    heap.one_arena()
    lock_timeout = lock_timeout_from_env()
    recorder = recorder_from_env()
    prepared = build_config(args)
    config = prepared.config
    _check_output_paths(args, config.config_id[:12])
    settings = ClientSettings(args.api_key, args.timeout, args.max_retries)
    options = EvalOptions(
        concurrency=args.concurrency,
        fresh=args.fresh,
        retry_failed=args.retry_failed,
        pass_threshold=args.pass_threshold,
        lock_timeout=lock_timeout,
        shard=args.shard,
        recorder_process=recorder,
        label=check_label(args.label) if args.label else None,
    )
    import signal  # here: only a running eval handles signals, not every start

    display = prepared.describe(options)
    stop = threading.Event()
    interrupts = {"count": 0}

    def on_signal(signum: int, frame: Any) -> None:
        interrupts["count"] += 1
        if interrupts["count"] == 1:
            stop.set()
            err(
                "\nosmo: stopping: recording the runs in flight as they finish "
                "(press Ctrl-C again to abandon them)"
            )
        else:
            # Everything shown as completed is committed already: run_eval aborts without
            # waiting for the runs in flight (they end with the process).
            raise _Aborted

    # Signal handlers can only be set from the main thread (the CLI's case); a program
    # calling main() from another thread stops the eval by its own means.
    handle = threading.current_thread() is threading.main_thread()
    old_int = signal.signal(signal.SIGINT, on_signal) if handle else None
    old_term = signal.signal(signal.SIGTERM, on_signal) if handle else None
    display_bar = None if args.quiet else ProgressDisplay(
        sys.stderr, interval=args.progress_interval)  # fmt: skip
    try:
        with open_repo(args) as repo:
            try:
                outcome = launch(
                    repo, prepared, options, client=settings, stop=stop,
                    older_keys="adopt" if args.adopt_old_keys else (
                        "recompute" if args.recompute else None),
                    on_progress=display_bar.update if display_bar else None,
                    on_notice=None if args.quiet else lambda line: err(f"osmo: {line}"),
                )  # fmt: skip
            except StoppedWaiting:
                err("osmo: interrupted while waiting for another eval of this config; "
                    "nothing was run")  # fmt: skip
                return EXIT_INTERRUPTED
            if display_bar:
                display_bar.close()
            _report(args, repo, config, outcome, prepared.dataset, display)
    except _Aborted:
        err("osmo: aborted: the runs in flight were abandoned; every run shown as done is "
            "recorded")  # fmt: skip
        err("hint: resume with the same command" + (" without --fresh" if args.fresh else ""))
        return EXIT_INTERRUPTED
    finally:
        if display_bar:
            display_bar.close()
        if handle:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
    if outcome.interrupted:
        err(
            f"osmo: interrupted; {outcome.summary['runs']} of "
            f"{display['rows'] * display['n']} runs recorded. Resume with the same command"
            + (" without --fresh." if args.fresh else ".")
        )
        return EXIT_INTERRUPTED
    return _exit_status(args, outcome.summary)


def _exit_status(args: argparse.Namespace, summary: dict[str, Any]) -> int:
    """A finished eval's exit status (see docs/eval.md), with a hint for failed runs."""
    runs, failed = summary["runs"], summary["failed"]
    if runs and failed == runs:
        err(f"osmo: every run failed ({failed} of {runs}); the causes are listed above")
        err("hint: fix the cause, then re-run the failed runs with the same command and "
            "--retry-failed")  # fmt: skip
        return EXIT_ALL_FAILED
    if failed:
        runs_failed = f"{failed} run failed" if failed == 1 else f"{failed} runs failed"
        err(f"hint: {runs_failed}; re-run only those with the same command and --retry-failed")
    if args.fail_under is not None:
        score = summary.get("primary_score")
        if score is None:
            err(f"osmo: no run has a {summary['primary_metric']} score to compare with "
                f"--fail-under {args.fail_under:g}")  # fmt: skip
            return EXIT_BELOW_THRESHOLD
        if score < args.fail_under:
            err(f"osmo: {summary['primary_metric']} {score:.4f} is below --fail-under "
                f"{args.fail_under:g}")  # fmt: skip
            return EXIT_BELOW_THRESHOLD
    return 0


class _Aborted(KeyboardInterrupt):
    """Asked to stop twice (Ctrl-C, SIGTERM): stop now, not waiting for the runs in flight."""


def _report(args, repo: Repository, config: EvalConfig, outcome: EvalOutcome, dataset,
            display) -> None:  # fmt: skip
    from .report import print_summary, write_outputs

    if args.json:
        out(json.dumps({"config_id": outcome.config_id, "run": outcome.run_id,
                        "status": outcome.status, "config": display,
                        "session": outcome.session, "summary": outcome.summary},
                       indent=2, sort_keys=True))  # fmt: skip
    else:
        print_summary(config, outcome, display)
    # After the summary: were a file to fail now, the user still sees what was recorded.
    write_outputs(args, repo, config, outcome, dataset, display)
