"""The operator's view: `pgvault status` and the status page beside /metrics.

`model` builds one `StatusView` from the check report and the catalog's own query
functions; `text` renders it for a terminal, `page` as server-rendered HTML with an
inline-SVG timeline. Nothing here writes anything.
"""
