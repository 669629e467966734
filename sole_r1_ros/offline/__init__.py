"""Offline scoring: recorded bags (plan, run, journal, outputs) and the reports (plot, video)."""
