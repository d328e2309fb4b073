"""What every command shares: the error type, global options and the settings they imply."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Any, NoReturn

from rich.console import Console

from schemas.settings import Settings, load_settings


class CliError(Exception):
    """A failure to report as one line on stderr with a non-zero exit (no traceback)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one readable line instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


GLOBAL_EPILOG = ("global options --bootstrap-servers, --topic-prefix, --config and --profile "
                 "may be given anywhere on the line (see streamrisk --help)")


def add_global_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("global options (accepted anywhere on the line)")
    group.add_argument("--bootstrap-servers", metavar="HOST:PORT[,...]",
                       help="Kafka bootstrap servers (env STREAMRISK_BOOTSTRAP_SERVERS); "
                            "without it, commands that need a broker say so")
    group.add_argument("--topic-prefix", metavar="PREFIX",
                       help='prefix of every topic name (default "streamrisk.")')
    group.add_argument("--config", metavar="FILE", help="TOML or YAML settings file")
    group.add_argument("--profile", choices=("test", "embedded", "production"),
                       help="client timeouts and assignor profile (default embedded)")


@dataclass
class Context:
    """Handed to every command: parsed arguments, settings, and the consoles to write to."""

    args: argparse.Namespace
    out: Console = field(default_factory=lambda: Console(highlight=False))
    err: Console = field(default_factory=lambda: Console(stderr=True, highlight=False))
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = settings_from_args(self.args)
        return self._settings

    def require_bootstrap(self) -> str:
        servers = self.settings.bootstrap_servers
        if not servers:
            raise CliError("no Kafka broker given: pass --bootstrap-servers HOST:PORT or set "
                           "STREAMRISK_BOOTSTRAP_SERVERS (or run `streamrisk broker`)")
        return servers


def settings_from_args(args: argparse.Namespace, **extra: Any) -> Settings:
    return load_settings(getattr(args, "config", None),
                         bootstrap_servers=getattr(args, "bootstrap_servers", None),
                         topic_prefix=getattr(args, "topic_prefix", None),
                         profile=getattr(args, "profile", None), **extra)


def require_topic(ctx: Context, short_name: str) -> Settings:
    """The settings, once the broker answers and the catalogue topic `short_name` exists."""
    from producers.kafka import BrokerUnreachable, check_reachable

    ctx.require_bootstrap()
    settings = ctx.settings
    try:
        metadata = check_reachable(settings)
    except BrokerUnreachable as exc:
        raise CliError(str(exc)) from None
    if settings.topic(short_name) not in metadata.topics:
        raise CliError(f"topic {settings.topic(short_name)} does not exist (create the topics "
                       "with `streamrisk topics create`)")
    return settings


# --- argparse types: a bad value is reported by argparse as one line, exit 2 ---------------


def positive_int(text: str) -> int:
    """A whole number >= 1.

    >>> positive_int("3")
    3
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (NaN and infinity are refused).

    >>> positive_float("0.5")
    0.5
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def print_wide(ctx: Context, renderable: object) -> None:
    """Tables keep their natural width when written to a pipe or file (no 80-column squeeze);
    in a terminal they fit the terminal."""
    if ctx.out.is_terminal:
        ctx.out.print(renderable)
        return
    width = ctx.out.width
    ctx.out.width = max(width, 200)  # print(width=...) can only narrow, so widen the console
    try:
        ctx.out.print(renderable)
    finally:
        ctx.out.width = width
