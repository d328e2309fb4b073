"""Entry point: builds the parser from the command modules and turns errors into one line.

Each command module exposes NAME, HELP, `add_arguments(parser)` and `run(ctx) -> int`, and
keeps heavy imports inside `run` so `streamrisk --help` stays fast.
"""

from __future__ import annotations

import importlib
import signal
import sys
from types import ModuleType

from consumers.cli.base import (
    GLOBAL_EPILOG,
    CliError,
    Context,
    OneLineParser,
    add_global_options,
)

COMMAND_MODULES = (
    "demo", "broker", "topics", "schemas_cmd", "simulate", "record", "replay", "publish",
    "worker", "evaluate", "alerts", "webhook", "limits", "kill", "enable", "dashboard", "bench",
)


def _load_commands() -> list[ModuleType]:
    modules = []
    for name in COMMAND_MODULES:
        try:
            modules.append(importlib.import_module(f"consumers.cli.{name}"))
        except ModuleNotFoundError as exc:
            # Only tolerate a command module that does not exist yet, never a broken import.
            if exc.name != f"consumers.cli.{name}":
                raise
    return modules


def build_parser() -> tuple[OneLineParser, dict[str, ModuleType]]:
    parser = OneLineParser(prog="streamrisk",
                           description="Streaming risk engine for algorithmic trading.")
    add_global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    commands: dict[str, ModuleType] = {}
    for module in _load_commands():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP,
                           epilog=GLOBAL_EPILOG)
        module.add_arguments(p)
        commands[module.NAME] = module
    return parser, commands


def main(argv: list[str] | None = None) -> int:
    parser, commands = build_parser()
    # Global options may follow the command (and its sub-actions): take them out first.
    # No abbreviations: a command option that is a prefix of a global one (say --topic) must
    # reach its command, not be swallowed here.
    globals_only = OneLineParser(prog="streamrisk", add_help=False, allow_abbrev=False)
    add_global_options(globals_only)
    global_args, rest = globals_only.parse_known_args(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(rest)
    for name, value in vars(global_args).items():
        if value is not None:
            setattr(args, name, value)
    if not args.command:
        parser.print_help()
        return 2
    ctx = Context(args=args)
    try:
        return int(commands[args.command].run(ctx) or 0)
    except CliError as exc:
        ctx.err.print(f"streamrisk {args.command}: error: {exc}", markup=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except BrokenPipeError:
        return 0
    except Exception as exc:
        from schemas.settings import ConfigFileError

        if isinstance(exc, ConfigFileError | FileNotFoundError | PermissionError):
            ctx.err.print(f"streamrisk {args.command}: error: {exc}", markup=False,
                          soft_wrap=True)
            return 2
        ctx.err.print(f"streamrisk {args.command}: internal error: "
                      f"{type(exc).__name__}: {exc} (set STREAMRISK_DEBUG=1 for a traceback)",
                      markup=False, soft_wrap=True)
        import os

        if os.environ.get("STREAMRISK_DEBUG"):
            raise
        return 1


if __name__ == "__main__":
    sys.exit(main())
