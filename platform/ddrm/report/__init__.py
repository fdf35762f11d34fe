"""``ddrm report``: tables with paired significance tests and plots from an MLflow experiment or parent run."""

from .collect import collect_runs
from .plots import write_plots
from .table import reference_first, summarize, write_tables

__all__ = ["collect_runs", "reference_first", "summarize", "write_tables", "write_plots"]
