"""`streamrisk enable --scope SCOPE`: re-enable a halted (or reducing) scope.

A HALTED scope only leaves that state through this command. It publishes a
TradingStateCommand(enable) to `risk.control`, audited like `kill` (`--by`, `--reason`).
Automatic rules re-arm at once: if the metric that halted the scope is still above its hard
level, the scope halts again, so raise the limit first (`streamrisk limits set`).
"""

from __future__ import annotations

import argparse

from consumers.cli.base import Context
from consumers.cli.kill import add_command_arguments, publish_command

NAME = "enable"
HELP = "re-enable a halted scope (manual, audited)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_command_arguments(parser, "re-enabled")


def run(ctx: Context) -> int:
    return publish_command(ctx, "enable", "re-enabled from the command line")
