"""The live dashboard: a read-only web page fed by server-sent events.

`state` holds what the page shows (bounded, thread-safe, delta by sequence number), `feed`
reads the output topics into it on a background thread, `server` serves the page, its
static assets (in `static/`, no CDN, no network) and the event stream.
"""
