"""The run report: one static HTML page of a run folder, reading what every package wrote (report/page.py).

    python -m report runs/magpie_air      ->  runs/magpie_air/report/index.html  (+ data.json)

It stands above synth/, train/ and eval/ (and imports them); none of them imports it.
"""
from .page import ReportError, gather, write_report

__all__ = ["ReportError", "gather", "write_report"]
