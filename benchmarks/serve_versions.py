"""benchmarks/serve.py --before REV: has `tfpredict serve` got slower since REV? In one run.

Four servers start side by side, batching off and on (as serve.py's, the same bench_dnn export), from
REV's source (a `git worktree` of REV, removed afterwards) and from this tree's. Each round measures every
cell on every server, the order reversed every other round (the 2 cores are shared with the clients and
anything else, and this machine's speed drifts between rounds): single-client REST p50 (batching off),
and requests/s at concurrency `--concurrency` (64) over REST (asyncio clients) and gRPC (h2load). The
comparison that matters is taken within each round: (after on/off) / (before on/off), so a slow spell
that lands on one round moves both sides of its ratio; the table gives medians and the range over rounds.
It also gives each cell's CPU time of the server's event-loop thread per answered request (warm-up
included): the resource a batching-on server runs out of, and a cost that the clients on the same cores
move less than they move requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import serve as base

SIDES = ("before", "after")
MODES = ("off", "on")


def worktree(rev: str, tmp: Path) -> Path:
    """A detached checkout of `rev` (its src/ is what the "before" servers run)."""
    path = tmp / "before"
    git = ["git", "-C", str(base.REPO), "worktree"]
    subprocess.run([*git, "add", "-q", "--detach", str(path), rev], check=True)
    return path


def run(args: argparse.Namespace, row: dict[str, object], tmp: Path) -> int:
    if shutil.which("h2load") is None:
        print("h2load not found (apt install nghttp2-client)", file=sys.stderr)
        return 2
    concurrency = int((args.concurrency or "64").split(",")[-1])
    rounds = args.rounds or 8
    before = worktree(args.before, tmp)
    batching = base.BATCHING.format(
        size=args.max_batch_size, timeout=args.batch_timeout_micros, threads=args.num_batch_threads
    )
    servers: dict[tuple[str, str], base.ServerProcess] = {}
    out: dict[tuple[str, str, str], list[float]] = collections.defaultdict(list)
    try:
        for side in SIDES:
            for mode in MODES:
                work = tmp / f"{side}-{mode}"
                work.mkdir()
                servers[side, mode] = base.ServerProcess(
                    batching if mode == "on" else "",
                    work,
                    args.event_loop,
                    args.batching_process,
                    name=f"{side}-{mode}",
                    repo=before if side == "before" else base.REPO,
                )
        for r in range(rounds):
            order = list(servers) if r % 2 == 0 else list(servers)[::-1]
            cells = [("REST p50 c=1", k) for k in order if k[1] == "off"]
            cells += [(f"{p} c={concurrency}", k) for p in ("REST", "gRPC") for k in order]
            for cell, key in cells:
                server = servers[key]
                loop_cpu, answered = (
                    base.cpu_seconds(server.proc.pid, server.proc.pid),
                    server.requests_answered(),
                )
                if cell.startswith("gRPC"):
                    result = base.measure_h2load(server.grpc_port, concurrency, args.seconds, row, tmp)
                else:
                    c = 1 if "c=1" in cell else concurrency
                    result = asyncio.run(base.measure("REST", server.rest_port, c, args.seconds, row))
                if result["errors"]:
                    raise RuntimeError(f"{key} {cell}: {result['first_error']}")
                value = result["p50"] if "p50" in cell else result["rps"]
                out[key + (cell,)].append(value)
                answered = server.requests_answered() - answered
                loop_us = (
                    (base.cpu_seconds(server.proc.pid, server.proc.pid) - loop_cpu) / max(1.0, answered) * 1e6
                )
                out[key + (cell + " loop",)].append(loop_us)
                print(
                    f"  round {r + 1} {cell:14s} {'-'.join(key):11s} {value:9.2f}  "
                    f"event loop {loop_us:5.0f} us/request",
                    file=sys.stderr,
                )
    finally:
        for s in servers.values():
            s.stop()
        git = ["git", "-C", str(base.REPO), "worktree"]
        subprocess.run([*git, "remove", "--force", str(before)], check=False)
    report(args.before, out, concurrency, rounds, args.seconds)
    return 0


def report(
    rev: str, out: dict[tuple[str, str, str], list[float]], concurrency: int, rounds: int, seconds: float
) -> None:
    def span(values: list[float], fmt: str) -> str:
        return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"

    print(
        f"\n`tfpredict serve` at {rev} (before) and this tree (after), bench_dnn, 1 row per Classify, "
        f"{rounds} interleaved rounds of {seconds:g}s per cell; medians (min-max over rounds)\n"
    )
    print("| measure | before | after | after / before |")
    print("|---|---:|---:|---:|")
    p50 = [out[side, "off", "REST p50 c=1"] for side in SIDES]
    print(f"| single-client REST p50 ms | {span(p50[0], '.2f')} | {span(p50[1], '.2f')} | "
          f"{span([a / b for b, a in zip(*p50, strict=True)], '.3f')} |")  # fmt: skip
    for protocol in ("REST", "gRPC"):
        cell = f"{protocol} c={concurrency}"
        for mode in MODES:
            b, a = out["before", mode, cell], out["after", mode, cell]
            print(f"| {cell} batching {mode} req/s | {span(b, '.0f')} | {span(a, '.0f')} | "
                  f"{span([x / y for y, x in zip(b, a, strict=True)], '.3f')} |")  # fmt: skip
        ratios = {
            side: [on / off for off, on in zip(out[side, "off", cell], out[side, "on", cell], strict=True)]
            for side in SIDES
        }
        paired = [a / b for b, a in zip(ratios["before"], ratios["after"], strict=True)]
        print(f"| {cell} batching on / off | {span(ratios['before'], '.2f')} | "
              f"{span(ratios['after'], '.2f')} | {span(paired, '.3f')} |")  # fmt: skip
        for mode in MODES:
            b, a = out["before", mode, cell + " loop"], out["after", mode, cell + " loop"]
            rel = [x / y for y, x in zip(b, a, strict=True)]
            print(f"| {cell} batching {mode}: event-loop CPU us/request | {span(b, '.0f')} | "
                  f"{span(a, '.0f')} | {span(rel, '.3f')} |")  # fmt: skip
