"""``ddrm report``: tables with paired significance tests and plots from an MLflow experiment or parent run."""

from .collect import collect_runs
from .plots import write_plots
from .table import summarize, write_tables

__all__ = ["collect_runs", "summarize", "write_tables", "write_plots"]
