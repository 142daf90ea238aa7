"""The command-line monitor: ``python -m wirthforge_ws.client [URL] [options]``.

It connects one :class:`~.core.WirthforgeClient`, prints a line of
statistics every second (:class:`StatsPrinter`) and, on ``--duration``,
SIGINT or SIGTERM, a summary. Exit status: 0 after at least one session,
1 when it never connected or the client failed, 2 when the server refused
it, 64 for bad ``--channels`` or ``--energy-rate`` values.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any

import orjson

from ..protocol.codes import CHANNELS
from .core import DEFAULT_URL, WirthforgeClient

__all__ = ["StatsPrinter", "build_arg_parser", "main"]


class StatsPrinter:
    """Prints one line of a client's statistics every *interval* seconds."""

    def __init__(self, client: WirthforgeClient, stream: IO[str], interval: float = 1.0) -> None:
        self.client = client
        self.stream = stream
        self.interval = interval

    @staticmethod
    def format_line(snapshot: Mapping[str, Any]) -> str:
        """State, energy rate, latency percentiles and the main counters of *snapshot*, on one line."""
        latency = snapshot["latency_ms"]

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f}"

        return (
            f"{snapshot['state']:<12} {snapshot['energy_hz']:5.1f} Hz  "
            f"latency p50 {ms(latency['median'])} p99 {ms(latency['p99'])} max {ms(latency['max'])} ms  "
            f"gaps {snapshot['frame_gaps']}  reconnects {snapshot['reconnects']}  "
            f"recovered {snapshot['recovered']}  messages {snapshot['messages']}"
        )

    async def run(self) -> None:
        """Print until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            print(self.format_line(self.client.snapshot()), file=self.stream, flush=True)


def build_arg_parser() -> argparse.ArgumentParser:
    """The parser of the command line's arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m wirthforge_ws.client",
        description="Connect to a WIRTHFORGE server and print live statistics every second.",
    )
    parser.add_argument("url", nargs="?", default=DEFAULT_URL, help=f"WebSocket URL (default {DEFAULT_URL})")
    parser.add_argument("--protocol", choices=("1.0", "1.1"), default="1.1", help="protocol to offer (default 1.1)")
    parser.add_argument(
        "--channels",
        nargs="+",
        metavar="CHANNEL",
        help=f"channels to receive (1.1), space or comma separated: {', '.join(CHANNELS)}",
    )
    parser.add_argument("--energy-rate", type=float, metavar="HZ", help="energy frames per second (1.1)")
    parser.add_argument("--duration", type=float, metavar="S", help="exit after S seconds with a summary")
    parser.add_argument("--origin", help="Origin header to send (none by default)")
    parser.add_argument("--json", action="store_true", help="print the final summary as one JSON object on stdout")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 refused, 1 never connected)."""
    args = build_arg_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return asyncio.run(_run(args))
    except ValueError as exc:  # bad --channels / --energy-rate
        print(f"error: {exc}", file=sys.stderr)
        return 64


async def _run(args: argparse.Namespace) -> int:
    client = WirthforgeClient(
        args.url,
        protocol=args.protocol,
        channels=_split_channels(args.channels),
        energy_rate=args.energy_rate,
        origin=args.origin,
    )
    if args.protocol == "1.0" and (args.channels or args.energy_rate):
        # The client sends options only with protocol 1.1, so nothing else is needed.
        print("note: --channels/--energy-rate need protocol 1.1; ignored", file=sys.stderr)
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, interrupted.set)
    printer = StatsPrinter(client, sys.stderr if args.json else sys.stdout)
    async with client:
        printer_task = loop.create_task(printer.run())
        watchers = {
            loop.create_task(interrupted.wait()),
            loop.create_task(client.wait_stopped()),
        }
        try:
            await asyncio.wait(watchers, timeout=args.duration, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (printer_task, *watchers):
                task.cancel()
            await asyncio.gather(printer_task, *watchers, return_exceptions=True)
    summary = client.snapshot()  # after close: state is closed, refused or failed
    if args.json:
        sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    else:
        _print_summary(summary)
    if client.state == "refused":
        return 2
    if client.state == "failed" or summary["sessions"] == 0:
        return 1
    return 0


def _split_channels(values: Sequence[str] | None) -> list[str] | None:
    """``--channels a,b c`` -> ``["a", "b", "c"]``; None (all channels) when not given."""
    if not values:
        return None
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def _print_summary(summary: Mapping[str, Any]) -> None:
    print("summary: " + StatsPrinter.format_line(summary))
    print(
        f"  sessions {summary['sessions']}  reconnect ms last/max "
        f"{summary['reconnect_ms']['last']}/{summary['reconnect_ms']['max']}  "
        f"incomplete resumes {summary['incomplete_resumes']}  duplicates {summary['duplicates']}  "
        f"frames missed {summary['frames_missed']}  "
        f"close {summary['close_code']} {summary['close_reason'] or ''}".rstrip()
    )
    if summary["last_error"]:
        print(f"  last error: {summary['last_error'].get('code')}: {summary['last_error'].get('message')}")
