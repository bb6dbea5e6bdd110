"""`shadow replay`: re-verify stored traffic against today's V2 (or, with --stored, the stored
V2 answers under today's rules), reading the store directly."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import time
from collections import Counter

from rich.console import Console

from shadow.cli.loop import run_async
from shadow.cli.views import make_console, print_json, print_verification, progress_bar
from shadow.compare import compare
from shadow.credentials import mask_url
from shadow.filters import parse_filters
from shadow.model import Comparison
from shadow.reports_model import ExchangeSummary
from shadow.rules import load_rules_file
from shadow.settings import Settings
from shadow.verify import verification_report


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    return run_async(run_replay(args, settings))


async def run_replay(args: argparse.Namespace, settings: Settings) -> int:
    from comparer import open_store  # the services load only for the command that runs them
    from subscriber.client import ReplayClient

    if not args.stored:
        settings.require("v2")
    query = {k: str(v) for k, v in (("route", args.route), ("signature", args.signature),
                                     ("since", args.since)) if v is not None}
    filters = parse_filters(query, time.time(),
                            default_outcome="mismatch" if args.only == "mismatches" else None)
    rules = load_rules_file(settings.rules)
    store = open_store(settings.store)
    client = None if args.stored else ReplayClient(settings)
    console = make_console()
    progress_console = Console(stderr=True)  # stdout stays clean for --json
    await store.open()
    if client is not None:
        await client.start()
    try:
        before: list[ExchangeSummary] = []
        cursor = None
        per_class: Counter[str] = Counter()
        while len(before) < args.limit:
            page, cursor = await store.list_exchanges(
                dataclasses.replace(filters, cursor=cursor, limit=min(1000, args.limit - len(before))))
            for x in page:  # the documents kept (shadow.keep): each class's examples, newest first
                group = x.get("signature") or f"{x['outcome']} {x['method']} {x['route']}"
                if x["outcome"] not in ("match", "mismatch") or \
                        (args.per_class is not None and per_class[group] >= args.per_class):
                    continue
                per_class[group] += 1
                before.append(x)
            if cursor is None:
                break
        after: dict[str, Comparison] = {}
        sem = asyncio.Semaphore(settings.replay_concurrency)
        today = datetime.date.today()
        doing = (f"re-comparing {len(before)} stored exchanges under "
                 f"{settings.rules or 'no rules'}" if client is None else
                 f"re-sending {len(before)} stored requests to {mask_url(str(settings.v2))}")
        with progress_bar(progress_console) as progress:
            task = progress.add_task(doing, total=len(before))

            async def one(summary: ExchangeSummary) -> None:
                async with sem:
                    x = await store.get(summary["id"])
                    v2 = None
                    if x is None or x.request is None or x.v1 is None:
                        pass
                    elif client is None:
                        v2 = x.v2
                    elif client.policy.decision(x.request, x.id) is None:  # as the subscriber
                        v2 = await client.call(str(settings.v2).rstrip("/"), x.request,
                                               x.request_id or x.id)
                    if x is not None and x.v1 is not None and v2 is not None:
                        after[x.id] = compare(x.request, x.v1, v2, x.route,
                                              rules.active(x.method, x.route, today))
                    progress.advance(task)

            await asyncio.gather(*(one(x) for x in before))
        report = verification_report(before, after)
    finally:
        if client is not None:
            await client.stop()
        await store.close()
    if args.json:
        print_json(report)
    else:
        print_verification(report, console, stored=args.stored)
    still = any(c["verdict"] != "fixed" for c in report["classes"]) or report["new_regressions"]
    return 1 if still else 0
