"""Inbound mail: the doors (SMTP/LMTP, IMAP, pipe) that all end in :func:`receive`, and the processor."""
