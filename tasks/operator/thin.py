"""``sluice run``'s thin start: the running workers start the runs, the command only asks.

Importing what starts a run in the command itself (click, the configuration's models with
pydantic and httpx, redis-py, Celery and kombu) took ~0.5 s before the producer task was out,
most of the time from the command to the first item. A worker has all of it loaded. So
``sluice run SOURCE`` first sends one task message, a start request, with the standard library
only (``tasks.operator.resp``, ``tasks.envelope``), and a worker starts the runs as beat's
``resync_source`` does and answers with their records (``tasks.start.start_request``).

Nothing runs twice, nothing is lost: before it publishes, the command sets a claim key
(``keys.start_claim``); the worker that takes the message takes the claim in one transaction,
and only then starts anything. The command waits ``FIRST_REPLY`` seconds for the answer; if
none came it deletes the claim. Deleted by the command: no worker will start these runs (the
message, when a worker gets it, finds no claim and does nothing), and the command goes the
ordinary way (the run record and its producer task from the command, waiting in the queue for
a worker, as before). Not there any more: a worker has it, and the answer is coming.

The ordinary way is also taken for everything this does not handle: another command, options
it does not know, ``--help``, a broker that is not the Redis of the run records, a URL
``resp`` does not read (``rediss://``), ``SLUICE_*`` variables spelt in lower case, a
sluice.toml it cannot read, Redis unreachable, and an answer that is an error (an unknown
source or kind, a worker that holds another sluice.toml): that way prints the messages and
exit codes it always did.

What changes with it: the run's trace starts in the worker (as a scheduled run's does), not
in the command; the sluice.toml checked is the workers' (the same text: the digests must
match), so the command needs none of the configuration's secrets; Flower sees no
``task-sent`` event for the start request (it sees it received and run).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Mapping
from typing import Any, NamedTuple

from tasks import envelope
from tasks.digest import file_digest
from tasks.operator import resp
from tasks.runs import keys

# Seconds the command waits for a worker to take its request. An idle worker answers within
# ~0.05 s (it waits on the queue's wake list); the ordinary way costs ~0.5 s of imports. With
# no worker, or all busy, the command goes the ordinary way after this long, and its run waits
# in the queue as it would have. Long enough for a worker that finishes a task first.
FIRST_REPLY = 1.0
# Seconds to wait for the answer once a worker has taken the request: the worker creates the
# run records and sends the producers (milliseconds), unless Redis is very slow.
TAKEN_REPLY = 60.0
CLAIM_TTL = 60  # seconds: a request whose command is gone is not started later than this
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"  # tasks.settings.Settings.redis_url


class RunArgs(NamedTuple):
    """``sluice [--config PATH] run SOURCE [--kind K]... [--wait] [--json] [--full]
    [--config PATH]``. (A NamedTuple, not a dataclass: ``dataclasses`` imports ``inspect``,
    7 ms of this path's 25.)"""

    source: str
    kinds: tuple[str, ...] = ()
    wait: bool = False
    as_json: bool = False
    full: bool = False
    config: str | None = None


class Failed(Exception):
    """A worker took the request and could not start the runs (the message says why)."""


_FLAGS = {"--wait": "wait", "--json": "as_json", "--full": "full"}
_VALUED = ("--kind", "--config")


def _option(arg: str, rest: list[str]) -> tuple[str, str] | None:
    """``--kind K``, ``--kind=K``, ``--config PATH``, ``--config=PATH``: (name, value)."""
    name, eq, value = arg.partition("=")
    if name not in _VALUED:
        return None
    if not eq:
        if not rest:
            return None
        value = rest.pop(0)
    return name, value


def parse(argv: list[str]) -> RunArgs | None:
    """The ``run`` command's arguments, or None for anything else (the click CLI decides)."""
    rest = list(argv)
    found: dict[str, Any] = {"source": "", "kinds": ()}
    while rest and rest[0] != "run":  # the group's options: --config only
        option = _option(rest.pop(0), rest)
        if option is None or option[0] != "--config":
            return None
        found["config"] = option[1]
    if not rest:
        return None
    rest.pop(0)
    while rest:
        arg = rest.pop(0)
        if arg in _FLAGS:
            found[_FLAGS[arg]] = True
        elif arg.startswith("-"):  # --help, an unknown option: click says what it says
            if (option := _option(arg, rest)) is None:
                return None
            if option[0] == "--kind":
                found["kinds"] += (option[1],)
            else:
                found["config"] = option[1]
        elif found["source"]:  # a second argument
            return None
        else:
            found["source"] = arg
    return RunArgs(**found) if found["source"] else None


def redis_address(env: Mapping[str, str]) -> resp.Address | None:
    """Where the run records and the queue are, read as ``tasks.settings`` reads them; None
    when this path does not handle it (a broker of its own, a URL ``resp`` does not read)."""
    if any(k.upper().startswith("SLUICE_") and k != k.upper() for k in env):
        return None  # pydantic-settings reads them case-insensitively: let it decide
    redis_url = env.get("SLUICE_REDIS_URL", DEFAULT_REDIS)
    broker = env.get("SLUICE_BROKER_URL")
    if broker and broker != redis_url:
        return None
    try:
        return resp.parse_url(redis_url)
    except resp.Unsupported:
        return None


def config_path(args: RunArgs, env: Mapping[str, str]) -> str | None:
    path = args.config if args.config is not None else env.get("SLUICE_CONFIG", "sluice.toml")
    return path or None


def start(args: RunArgs, env: Mapping[str, str]) -> list[dict[str, Any]] | None:
    """Ask the workers to start the runs; their records (``Run.as_json``), or None: go the
    ordinary way (nothing was started, nothing will be). Raises Failed when a worker may have
    started them and the command cannot know (Redis lost meanwhile), or could not."""
    address = redis_address(env)
    path = config_path(args, env)
    if address is None or path is None:
        return None
    try:
        digest = file_digest(path)
    except (OSError, UnicodeDecodeError):
        return None
    try:
        conn = resp.Connection(address)
    except (OSError, resp.RespError):  # nothing sent: the ordinary way says what is wrong
        return None
    try:
        return _ask(conn, args, digest)
    except (OSError, resp.RespError) as exc:
        # Once the request may be out, going the ordinary way could start the runs twice.
        raise Failed(f"lost Redis while asking the workers to start the runs of "
                     f"{args.source} ({type(exc).__name__}: {exc}); see `sluice status`"
                     ) from None
    finally:
        conn.close()


def _ask(conn: resp.Connection, args: RunArgs, digest: str) -> list[dict[str, Any]] | None:
    request = uuid.uuid4().hex
    claim, reply = keys.start_claim(request), keys.start_reply(request)
    kwargs = {"kinds": list(args.kinds), "full": args.full, "digest": digest, "request": request}
    kinds = f" kinds={','.join(args.kinds)}" if args.kinds else ""
    message = envelope.task_message(
        envelope.START, [args.source], kwargs, task_id=str(uuid.uuid4()), queue=envelope.URGENT,
        argsrepr=f"{args.source}{kinds}{' full' if args.full else ''} request={request}")
    try:
        replies = conn.pipeline([("SET", claim, "1", "EX", CLAIM_TTL),
                                 *envelope.publish_commands(envelope.URGENT, message)])
        if any(isinstance(answer, resp.RespError) for answer in replies):
            # Refused (a full Redis, a replica): without the claim no worker starts anything.
            conn.call("DEL", claim)
            return None
        got = conn.call("BLPOP", reply, str(FIRST_REPLY), timeout=FIRST_REPLY + 5)
        if got is None:
            if conn.call("DEL", claim) == 1:
                return None  # nobody took it, and nobody will: the ordinary way
            got = conn.call("BLPOP", reply, str(TAKEN_REPLY), timeout=TAKEN_REPLY + 5)
    except KeyboardInterrupt:
        conn.call("DEL", claim)  # not started unless a worker has it already
        raise
    if not isinstance(got, list) or len(got) != 2 or not isinstance(got[1], bytes):
        raise Failed(f"a worker took the start request of {args.source} but did not answer "
                     f"in {TAKEN_REPLY:.0f} s; see `sluice status`")
    answer = json.loads(got[1])
    if "runs" in answer:
        runs: list[dict[str, Any]] = answer["runs"]
        return runs
    if answer.get("fallback"):
        return None
    raise Failed(f"a worker could not start the runs of {args.source}: {answer.get('error')}")


def started_text(run: Mapping[str, Any]) -> str:
    """The line ``sluice run`` prints for a run it started (``Run.as_json``)."""
    note = f" ({run['reason']})" if run.get("reason") else ""
    return f"{run['source']}/{run['kind']}: run {run['run_id']} {run['state']}{note}"


def print_started(runs: list[dict[str, Any]], *, as_json: bool) -> None:
    """What ``sluice run`` prints once its runs are started: a line per run; without
    ``--wait``, ``--json`` prints each run's JSON instead (with it, only the final ones)."""
    for run in runs:
        sys.stdout.write((json.dumps(run) if as_json else started_text(run)) + "\n")
    sys.stdout.flush()


def main(args: RunArgs, env: Mapping[str, str]) -> int | None:
    """The thin ``sluice run``: its exit code, or None to go the ordinary way. With
    ``--wait``, the runs are watched by ``tasks.operator.cli`` once they are started."""
    try:
        runs = start(args, env)
    except Failed as exc:
        sys.stderr.write(f"sluice: {exc}\n")
        return 3
    except KeyboardInterrupt:
        return 130
    if runs is None:
        return None
    try:
        if not args.as_json or not args.wait:  # at once, before the imports of --wait
            print_started(runs, as_json=args.as_json)
        if not args.wait:
            return 0
        from tasks.operator.entry import collector_off

        with collector_off():
            from tasks.operator import cli
        return cli.watched(runs, as_json=args.as_json)
    except BrokenPipeError:  # `sluice run ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
