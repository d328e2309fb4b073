"""`streamrisk dashboard`: a live, read-only web page of alerts, states, prices and PnL."""

from __future__ import annotations

import argparse

from consumers.cli.base import CliError, Context

NAME = "dashboard"
HELP = "serve a live read-only web dashboard (alerts, trading states, VaR bands, PnL)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8050, metavar="P",
                        help="HTTP port (default 8050; 0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1", metavar="H",
                        help="address to bind (default 127.0.0.1: this machine only; the page "
                             "is read-only but shows positions and PnL)")
    parser.add_argument("--history", type=int, default=None, metavar="N",
                        help="records per partition read back at start (default: 400 instrument "
                             "snapshots, 200 account snapshots, 100 of the others)")


def run(ctx: Context) -> int:
    import signal
    import threading

    from consumers.dashboard.feed import DEFAULT_HISTORY, Feed, FeedError
    from consumers.dashboard.server import DashboardServer, is_loopback
    from consumers.dashboard.state import DashboardState
    from producers.kafka import BrokerUnreachable, check_reachable

    args = ctx.args
    if not 0 <= args.port <= 65535:
        raise CliError(f"--port must be between 0 and 65535, got {args.port}", 2)
    if args.history is not None and args.history < 0:
        raise CliError("--history must be zero or more", 2)
    ctx.require_bootstrap()
    try:
        check_reachable(ctx.settings)
    except BrokerUnreachable as exc:
        raise CliError(str(exc)) from None
    history = DEFAULT_HISTORY if args.history is None else dict.fromkeys(DEFAULT_HISTORY,
                                                                         args.history)
    state = DashboardState()
    try:
        feed = Feed(ctx.settings, state, history).start()
    except FeedError as exc:
        raise CliError(str(exc)) from None

    def health() -> tuple[bool, str]:
        if feed.alive:
            return True, "feed running"
        return False, f"feed stopped: {feed.error or 'unknown'}"

    try:
        server = DashboardServer(args.host, args.port, state, health=health)
    except OSError as exc:
        feed.stop()
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (docker stop, kubectl) ends like Ctrl-C.
        def _terminate(*_: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _terminate)
    where = "" if is_loopback(args.host) else " (reachable from other machines)"
    ctx.out.print(f"streamrisk dashboard on {server.url}{where}; reading "
                  f"{ctx.settings.topic_prefix}risk.* at {ctx.settings.bootstrap_servers}. "
                  "Ctrl-C to stop.", markup=False, soft_wrap=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stopping.set()
        server.server_close()
        feed.stop()
    return 0
