"""Billing automation: invoices and dunning, payments over invoices, suspensions, holds, the ledger and
credit limits, the forecast and the staff digest.

Importing :mod:`handlers.billing.dunning` and :mod:`handlers.billing.digest` registers their sweeps
(``handlers.jobs`` imports them when sweeps are run).
"""
