"""`streamrisk schemas export DIR`: one JSON Schema file per event type."""

from __future__ import annotations

import argparse

from consumers.cli.base import CliError, Context

NAME = "schemas"
HELP = "export the JSON Schema of every event type"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = sub.add_parser("export", help="write DIR/<Type>.schema.json for every event type")
    export.add_argument("dir", metavar="DIR")


def run(ctx: Context) -> int:
    from pathlib import Path

    import orjson

    from schemas.registry import EVENT_TYPES

    target = Path(ctx.args.dir)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create {target}: {exc.strerror}") from None
    for name, cls in sorted(EVENT_TYPES.items()):
        schema = cls.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"streamrisk/{name}.schema.json"
        (target / f"{name}.schema.json").write_bytes(
            orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    ctx.out.print(f"wrote {len(EVENT_TYPES)} schemas to {target}")
    return 0
