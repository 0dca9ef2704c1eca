"""``osmo eval cache dir|ls|rm|gc``, ``osmo log`` and ``osmo show``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable

from ..errors import (
    AmbiguousId,
    ConfigNotFound,
    CorruptRef,
    LockTimeout,
    ObjectNotFound,
    UsageError,
)
from ..eval.catalog import (
    STATUSES,
    ConfigInfo,
    check_eval_refs,
    dataset_label,
    find_config,
    history,
    list_configs,
    remove_configs,
)
from ..eval.configstate import EVAL_REF_PREFIX
from ..objects import ObjectType, RunRecord
from ..repo import Repository
from .common import EXIT_ERROR, err, human_bytes, open_repo, out
from .maintenance import add_gc_arguments, cmd_gc
from .table import print_table, terminal_columns


def register_eval_cache(csub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    cache = csub.add_parser("cache", parents=[common], help="stored eval configs: dir, ls, rm, gc")
    cs = cache.add_subparsers(dest="eval_cache_command", metavar="COMMAND", required=True)

    p = cs.add_parser("dir", parents=[common], help="print the store's path")
    p.set_defaults(cache_func=_with_repo(cmd_dir))

    p = cs.add_parser("ls", parents=[common], help="list configs, newest first")
    _filters(p)
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.add_argument(
        "-w",
        "--wide",
        action="store_true",
        help="every column in full on a terminal too (narrow, one drops columns and "
        "shortens cells to fit; piped, every column is printed in full)",
    )
    p.set_defaults(cache_func=_with_repo(cmd_ls))

    p = cs.add_parser(
        "rm",
        parents=[common],
        help="remove configs and their history (`eval cache gc` then frees their data)",
    )
    p.add_argument("ids", nargs="*", metavar="ID", help="config ids, unique prefixes or labels")
    p.add_argument("--all", action="store_true", help="every config")
    _filters(p)
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(cache_func=_with_repo(cmd_rm))

    p = cs.add_parser("gc", parents=[common], help="same as osmo cache gc")
    add_gc_arguments(p)
    p.set_defaults(cache_func=_with_repo(cmd_gc))


def register_history(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("log", parents=[common], help="history of a config's run records")
    p.add_argument("config", metavar="CONFIG", help="config id, unique prefix or label")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_log)

    p = sub.add_parser("show", parents=[common], help="pretty-print any object")
    p.add_argument("id", metavar="ID", help="object id, prefix, ref, or eval config id prefix")
    p.set_defaults(func=cmd_show)


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--label", metavar="TEXT", help="label contains TEXT (any case)")
    p.add_argument("--model", metavar="TEXT", help="model or agent contains TEXT (any case)")
    p.add_argument("--dataset", metavar="TEXT", help="dataset path contains TEXT (any case)")
    p.add_argument("--status", choices=STATUSES)


def _filtered(repo: Repository, args: argparse.Namespace) -> list[ConfigInfo]:
    return list_configs(repo, model=args.model, dataset=args.dataset, status=args.status,
                        label=args.label)  # fmt: skip


def _with_repo(fn):
    def run(args: argparse.Namespace) -> int:
        with open_repo(args) as repo:
            return fn(args, repo)

    return run


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def cmd_dir(args: argparse.Namespace, repo: Repository) -> int:
    out(str(repo.path))
    return 0


def cmd_ls(args: argparse.Namespace, repo: Repository) -> int:
    check_eval_refs(repo)
    configs = _filtered(repo, args)
    if args.json:
        rows = (
            {
                "config_id": c.config_id,
                "run": c.run_id,
                "label": c.label,
                "model": c.model,
                "dataset": c.dataset,
                "eval_fns": c.eval_fns,
                "n": c.n,
                "params": c.params,
                "status": c.status,
                "done": c.counts.get("done"),
                "total": c.counts.get("total"),
                "failed": c.counts.get("failed"),
                "score": c.score,
                "updated": c.updated,
            }
            for c in configs
        )
        _print_json_list(rows)
        return 0
    differing = _differing_params(configs)
    header = ("CONFIG", "LABEL", "MODEL", "DATASET", "EVAL FNS", "N",
              *(("PARAMS",) if differing else ()), "STATUS", "RUNS", "FAILED", "SCORE",
              "UPDATED")  # fmt: skip
    table = [header]
    for c in configs:
        score = c.score
        params = " ".join(f"{k}={c.params[k]}" for k in differing if k in c.params) or "-"
        table.append((
            c.config_id[:12],
            c.label or "-",
            c.model,
            dataset_label(c.dataset),
            ",".join(c.eval_fns) or "-",
            str(c.n or "-"),
            *((params,) if differing else ()),
            c.status,
            f"{c.counts.get('done', 0)}/{c.counts.get('total', 0)}",
            str(c.counts.get("failed", 0)),
            "-" if score is None else f"{score:.4f}",
            _when(c.updated),
        ))  # fmt: skip
    columns = None if args.wide else terminal_columns()
    print_table(
        table,
        # The last column is left free: some terminals wrap a line that fills it.
        width=columns - 1 if columns else None,
        drop=_LS_DROPPED,
        shrink={"LABEL": 12, "MODEL": 16, "DATASET": 12, "EVAL FNS": 10, "PARAMS": 16},
        keep_end=("MODEL", "DATASET"),  # `org/model-size-variant`, `name_split.jsonl`
    )
    return 0


#: The columns of `eval cache ls` a narrow terminal drops, first to last: what is left
#: tells configs apart (id, label, model, parameters) and says how each is doing.
_LS_DROPPED = ("UPDATED", "EVAL FNS", "N", "FAILED", "DATASET", "PARAMS", "LABEL", "RUNS")


def _differing_params(configs: list[ConfigInfo]) -> list[str]:
    """The sampling parameters whose values are not the same in every config listed (a
    parameter one config sets and another leaves out differs): the ones that tell configs
    apart."""
    names = sorted({k for c in configs for k in c.params})
    return [k for k in names if len({json.dumps(c.params.get(k)) for c in configs}) > 1]


def _print_json_list(items: Iterable[dict]) -> None:
    """What ``json.dumps(list(items), indent=2)`` prints, an item at a time (not the whole
    text at once: a store may hold thousands of configs)."""
    held: str | None = None  # an item waits for the next one: only the last has no comma
    for item in items:
        out("[" if held is None else held + ",")
        held = "\n".join("  " + line for line in json.dumps(item, indent=2).splitlines())
    if held is None:
        out("[]")
    else:
        out(held)
        out("]")


def cmd_rm(args: argparse.Namespace, repo: Repository) -> int:
    filtered = args.model or args.dataset or args.status or args.label
    if args.all and (filtered or args.ids):
        raise UsageError("--all removes every config: do not combine it with IDs or filters")
    if not (args.all or filtered or args.ids):
        raise UsageError("say what to remove: config IDs, filters, or --all")
    check_eval_refs(repo)
    if args.ids:
        wanted = {find_config(repo, t) for t in args.ids}
        configs = [c for c in list_configs(repo) if c.config_id in wanted]
        if filtered:
            keep = {c.config_id for c in _filtered(repo, args)}
            configs = [c for c in configs if c.config_id in keep]
    else:
        configs = _filtered(repo, args)
    if not configs:
        out("nothing to remove")
        return 0
    for c in configs:
        out(f"{c.config_id[:12]}  {c.model}  {dataset_label(c.dataset)}  {c.status}")
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("not removing without confirmation: pass -y")
        answer = input(f"remove {len(configs)} config(s)? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            err("osmo: nothing removed")
            return EXIT_ERROR
    n = remove_configs(repo, [c.config_id for c in configs])
    out(f"removed {n} config(s) and their history; {_what_gc_frees(repo)}")
    return 0


def _what_gc_frees(repo: Repository) -> str:
    """What `osmo eval cache gc` (its defaults) would free now: the removed configs' data
    that nothing else uses, and any other garbage."""
    from ..maintenance.gc import gc

    try:
        r = gc(repo, dry_run=True)
    except CorruptRef as e:
        return f"`osmo eval cache gc` would stop at {e}"
    except LockTimeout:
        return "another gc or repack is running; `osmo eval cache gc` frees their data"
    return f"`osmo eval cache gc` frees {human_bytes(r.bytes_freed)} ({r.bytes_freed} bytes)"


def cmd_log(args: argparse.Namespace, repo: Repository) -> int:
    check_eval_refs(repo)
    config_id = find_config(repo, args.config)
    entries = history(repo, config_id)
    if args.json:
        out(json.dumps([{"run": oid, "meta": r.meta} for oid, r in entries], indent=2))
        return 0
    for oid, record in entries:
        m = record.meta
        counts, sess = m.get("counts", {}), m.get("session", {})
        prov = m.get("provenance", {})
        out(f"run {oid}")
        out(f"Status:  {m.get('status')}  {counts.get('done')}/{counts.get('total')} runs, "
            f"{counts.get('failed')} failed")  # fmt: skip
        out(f"Date:    {_when(sess.get('started', 0))} -> {_when(sess.get('updated', 0))}")
        out(f"By:      {prov.get('user', '?')}  osmo {prov.get('osmo_version', '?')}  "
            f"python {prov.get('python', '?')}")  # fmt: skip
        out(f"Session: {sess.get('computed', 0)} computed, {sess.get('reused_rollouts', 0)} "
            f"rollouts reused, {sess.get('model_calls', 0)} model calls"
            + (", --fresh" if sess.get("fresh") else "")
            + (", --retry-failed" if sess.get("retry_failed") else ""))  # fmt: skip
        if m.get("score") is not None:
            out(f"Score:   {m['score']:.4f}")
        out("")
    return 0


def cmd_show(args: argparse.Namespace, repo: Repository) -> int:
    try:
        oid = repo.resolve(args.id)
    except (ObjectNotFound, AmbiguousId) as not_an_object:
        # Perhaps an eval config id (prefix). Only "no such object" leads here: damage
        # anywhere is reported as such, never taken for a name that is not there.
        check_eval_refs(repo)
        try:
            config_id = find_config(repo, args.id)
        except ConfigNotFound:
            if isinstance(not_an_object, AmbiguousId):
                raise not_an_object from None
            raise
        oid = repo.refs.read(f"{EVAL_REF_PREFIX}{config_id}")
    otype, content = repo.objects.get(oid)
    if otype is ObjectType.BLOB:
        try:
            out(json.dumps(json.loads(content), indent=2, ensure_ascii=False, sort_keys=True))
        except (UnicodeDecodeError, ValueError):
            sys.stdout.flush()
            sys.stdout.buffer.write(content)
        return 0
    if otype is ObjectType.TREE:
        from ..tree import list_tree  # here: `osmo eval cache ls` starts without tree.py

        entries = list_tree(repo.objects, oid)
        out(f"tree {oid}  ({len(entries)} entries)")
        for e in entries[:200]:
            out(f"{e.type.value} {e.oid}\t{e.name}")
        if len(entries) > 200:
            out(f"... {len(entries) - 200} more (osmo ls-tree {oid[:12]})")
        return 0
    record = RunRecord.from_content(content)
    out(f"run {oid}")
    out(f"tree    {record.tree}")
    for p in record.parents:
        out(f"parent  {p}")
    out(json.dumps(record.meta, indent=2, ensure_ascii=False, sort_keys=True))
    return 0
