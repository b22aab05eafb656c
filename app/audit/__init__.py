"""The audit: every running workload re-decided against today's policies and trust data, reported
as PolicyReports (docs/audit.md). Lists (scan.py), decides (engine.py), reports (reports.py),
renders for the CLI (render.py) and runs in the background of ``serve --kube`` (loop.py)."""
