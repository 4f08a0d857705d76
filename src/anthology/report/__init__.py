"""The HTML report of a run directory: one self-contained page (inline CSS and SVG charts, no
scripts, nothing fetched) with the metrics, the answers per question, correlation heatmaps, subgroups,
the panel's demographics, sample backstories and the run's provenance.

    from anthology.report import write_report

    path = write_report("runs/w34")   # runs/w34/report.html
"""

from anthology.report.build import write_report

__all__ = ["write_report"]
