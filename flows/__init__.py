"""Prefect flows that run runbooks; installed as ``tocsin.flows``."""
