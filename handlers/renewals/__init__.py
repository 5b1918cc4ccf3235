"""Renewals: the reminder sweep, reply tokens and activation codes, the reply grammar, decisions
(by email reply, on the renewal page, with an activation code) and the sales contact's notice.

Importing :mod:`handlers.renewals.reminders` registers the reminder sweep.
"""
