"""The soak benchmark's tables, verdicts and chart (``soak.py`` measures, this writes)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import soakmeter as meter

if TYPE_CHECKING:
    from soak import Hooks, Runs

HEADER = ("| min | Redis MB | keys | keys w/o TTL | w/o TTL KB | clients | worker MB | "
          "worker fds | worker sockets | serve MB | beat MB | runs started | ended | "
          "failed | hooks | hook p50 ms | hook p99 ms |\n" + "|---:" * 17 + "|")
FLAT = 0.10  # a series is flat when its second half moves by less than this share of its mean


def _no_ttl(row: dict[str, Any]) -> tuple[int, int]:
    fams = row["families"].values()
    return sum(f.no_ttl for f in fams), sum(f.bytes for f in fams)


def _ended(runs: dict[str, int]) -> int:
    return runs["started"] - runs.get("running", 0) - runs.get("finalizing", 0)


def line(row: dict[str, Any]) -> str:
    lasting, lasting_bytes = _no_ttl(row)
    w, s, b = (row["procs"][n] for n in ("worker", "serve", "beat"))
    runs = row["runs"]
    lat = row["hook_latency"]
    return (f"| {row['minute']:.0f} | {row['used_memory'] / 2**20:.1f} | {row['dbsize']:,} | "
            f"{lasting} | {lasting_bytes / 1024:.0f} | {row['clients']} | "
            f"{w.get('rss', 0):.0f} | {w.get('fds', 0):.0f} | {w.get('sockets', 0):.0f} | "
            f"{s.get('rss', 0):.0f} | {b.get('rss', 0):.0f} | {runs['started']:,} | "
            f"{_ended(runs):,} | {runs.get('failed', 0) + runs.get('partial', 0)} | "
            f"{row['hooks_sent']:,} | {meter.pct(lat, 50) * 1000:.0f} | "
            f"{meter.pct(lat, 99) * 1000:.0f} |")


def series(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    return {
        "Redis used_memory (MB)": [r["used_memory"] / 2**20 for r in rows],
        "keys (DBSIZE)": [r["dbsize"] for r in rows],
        "keys without a TTL": [_no_ttl(r)[0] for r in rows],
        "bytes of keys without a TTL (KB)": [_no_ttl(r)[1] / 1024 for r in rows],
        "Redis clients": [r["clients"] for r in rows],
        "worker RSS (MB)": [r["procs"]["worker"].get("rss", 0) for r in rows],
        "worker open fds": [r["procs"]["worker"].get("fds", 0) for r in rows],
        "worker sockets": [r["procs"]["worker"].get("sockets", 0) for r in rows],
        "serve RSS (MB)": [r["procs"]["serve"].get("rss", 0) for r in rows],
        "beat RSS (MB)": [r["procs"]["beat"].get("rss", 0) for r in rows],
    }


def slopes(rows: list[dict[str, Any]]) -> list[tuple[str, float, float, bool]]:
    """(series, slope per minute over the second half, its change over that half as a share
    of the half's mean, flat or not)."""
    half = rows[len(rows) // 2:]
    xs = [r["minute"] for r in half]
    found = []
    for name, values in series(half).items():
        k = meter.slope(xs, values)
        mean = sum(values) / len(values) if values else 0
        share = abs(k * (xs[-1] - xs[0])) / mean if mean and len(xs) > 1 else 0.0
        found.append((name, k, share, share < FLAT))
    return found


def growth(rows: list[dict[str, Any]], final: dict[str, Any]) -> list[str]:
    """Families whose key count or size never fell over the second half and ended over 5%
    higher: what nothing trims (no TTL, or a TTL renewed before it runs out)."""
    half = [*rows[len(rows) // 2:], final]
    names = sorted({n for r in half for n in r["families"]})
    out = []
    for name in names:
        sizes = [r["families"].get(name, meter.Family()).size for r in half]
        counts = [r["families"].get(name, meter.Family()).keys for r in half]
        if meter.growing(sizes) or meter.growing(counts):
            lasting = half[-1]["families"].get(name, meter.Family()).no_ttl
            out.append(f"| `{name}` | {counts[0]:,} → {counts[-1]:,} | "
                       f"{sizes[0]:,} → {sizes[-1]:,} | {lasting:,} |")
    return out


def ttls(final: dict[str, Any], rules: list[meter.Documented]) -> tuple[list[str], int]:
    """A row per documented family: keys, longest TTL, keys breaking the rule; and how many
    keys break it in all."""
    out, bad = [], 0
    for rule in rules:
        fams = [f for n, f in final["families"].items() if n.startswith(rule.prefix)]
        count = sum(f.keys for f in fams)
        longest = max((f.max_ttl for f in fams), default=0)
        broken = [b for f in fams for b in f.bad]
        bad += len(broken)
        limit = f"≤ {rule.ttl:,} s" if rule.ttl else "some TTL"
        out.append(f"| `{rule.prefix}…` | {rule.where} | {limit} | {count:,} | {longest:,} | "
                   f"{len(broken)}{': ' + broken[0] if broken else ''} |")
    return out, bad


def report(a: argparse.Namespace, rows: list[dict[str, Any]], final: dict[str, Any],
           drained: float, hooks: Hooks, runs: Runs, command: str, settings: Any, *,
           machine: str) -> str:
    rules = meter.documented(settings.run_ttl_seconds, settings.webhook_delivery_ttl,
                             settings.run_lock_seconds)
    counts = final["runs"]
    open_ = [i for i, s in runs.states.items() if s in ("running", "finalizing", "lost")]
    by_state = ", ".join(f"{s} {n:,}" for s, n in sorted(counts.items()) if s != "started")
    lat = [hooks.landed[n] - t for n, t in hooks.answered.items() if n in hooks.landed]
    flat = slopes(rows)
    grows = growth(rows, final)
    ttl_rows, bad = ttls(final, rules)
    top = sorted(final["families"].items(), key=lambda kv: -kv[1].keys)[:15]
    verdicts = [
        ("every run ended", not open_, f"{counts['started']:,} runs: {by_state}; "
         f"drained in {drained:.0f} s" + (f"; NOT ended: {', '.join(open_[:5])}" if open_
                                          else "")),
        ("every webhook event landed", len(lat) == len(hooks.answered) and not hooks.refused,
         f"{len(hooks.answered):,} accepted, {len(lat):,} rows, {len(hooks.refused)} refused"),
        ("flat over the second half", all(f for *_, f in flat),
         ", ".join(n for n, *_, f in flat if not f) or "every series"),
        ("documented keys carry their TTL", bad == 0, f"{bad} keys without it or longer"),
        ("no key family grows", not grows, f"{len(grows)} families grow"),
    ]
    return f"""# Soak: flat under sustained load

Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine}, with
`{command}`: {a.minutes:g} minutes. The machine's 2 cores were shared with other work (other
sessions' tests and benchmarks), so latencies and run times are noisy; memory, key counts and
connections are not.

{a.sources} small REST sources (100–1,000 items, cursor paging, 100 a page; every third
incremental, 5 items changing a minute; sources {', '.join(f's{i:02d}' for i in (4, 14, 24))}
with a child kind whose API answers 404 for a third of the parents (rejected) and 500 for a
few, past every retry (their child batches are dead-lettered);
{', '.join(f's{i:02d}' for i in (7, 17, 27))} answering two 500s every three
minutes), each started by `celery -A tasks beat` every 40–89 s; a backfill of
{a.backfill:,} items (`sluice run backfill`) every {a.backfill_every:g} minutes; signed GitHub
`issues` events to `sluice serve` at {a.webhook_rate:g}/s; one plain `celery -A tasks worker`
(the defaults); SQLite target. `SLUICE_RUN_TTL_SECONDS` and `SLUICE_WEBHOOK_DELIVERY_TTL` set
to {a.ttl} s for every process, so that records expire within the soak (defaults: 14 days and
4 days; the same code sets them).

## Verdicts

| check | met | what was seen |
|---|---|---|
""" + "".join(f"| {n} | {'yes' if ok else '**no**'} | {what} |\n"
              for n, ok, what in verdicts) + f"""
## Every minute

{HEADER}
""" + "\n".join(line(r) for r in rows) + """

Hook latency: from an event's 202 to its row in the target (polled every 0.1 s), for the
events of that minute. Failed: runs `failed` or `partial` (the dead-lettered child batches).

## Slopes over the second half (least squares, per minute)

| series | slope / min | change over the half, share of its mean | flat (< 10%) |
|---|---:|---:|---|
""" + "".join(f"| {n} | {k:+.3f} | {s:.1%} | {'yes' if f else '**no**'} |\n"
              for n, k, s, f in flat) + """
## Documented expiry: every key of the family carries a TTL no longer than documented

Keys of runs still active are exempt (their TTLs start when the run ends).

| family | documented in | TTL | keys at the end | longest TTL seen (s) | keys breaking it |
|---|---|---|---:|---:|---|
""" + "\n".join(ttl_rows) + f"""

## Families that grow (never fell over the second half, ended over 5% higher)

With every TTL shortened to {a.ttl} s, a family of keys that expire levels off after
{a.ttl // 60} minutes; one that still grows in the second half is not trimmed by anything.

| family | keys | size (members, fields, length; strings: bytes) | keys without a TTL |
|---|---:|---:|---:|
""" + ("\n".join(grows) or "| none | | | |") + """

## Keys at the end, by family (the 15 largest)

| family | keys | without a TTL | longest TTL (s) |
|---|---:|---:|---:|
""" + "\n".join(f"| `{n}` | {f.keys:,} | {f.no_ttl:,} | {f.max_ttl:,} |" for n, f in top) + f"""

Webhooks over the whole soak: 202 → row p50 {meter.pct(lat, 50) * 1000:.0f} ms, p99
{meter.pct(lat, 99) * 1000:.0f} ms, max {max(lat, default=0) * 1000:.0f} ms.
"""


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["minute"] for r in rows]
    data = series(rows)
    fig, axes = plt.subplots(len(data) // 2, 2, figsize=(11, 12), sharex=True)
    for ax, (name, values) in zip(axes.flat, data.items(), strict=True):
        ax.plot(xs, values, marker=".")
        ax.set_title(name, fontsize=9)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("minute")
    fig.suptitle("Sluice soak: one sample a minute")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
