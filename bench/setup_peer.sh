#!/bin/sh
# Make the django-helpdesk virtualenv that bench.ingest compares against, in .peer/venv (git-ignored).
# The peer's folder (RENEWDESK_PEER_DIR, else ../shared/peers/django-helpdesk) may be read-only,
# so the venv lives in this checkout. Installs the peer's pinned requirements.txt from PyPI.
set -eu
cd "$(dirname "$0")/.."
PEER_DIR="${RENEWDESK_PEER_DIR:-../shared/peers/django-helpdesk}"
PYTHON="${PYTHON:-python3.11}"
test -f "$PEER_DIR/requirements.txt" || { echo "setup_peer: no requirements.txt in $PEER_DIR" >&2; exit 1; }
test -x /usr/bin/time || echo "setup_peer: the peer's runner needs GNU time: apt-get install time" >&2
test -x .peer/venv/bin/python || "$PYTHON" -m venv .peer/venv
.peer/venv/bin/python -m pip install --quiet -r "$PEER_DIR/requirements.txt"
.peer/venv/bin/python -c "import django, importlib.metadata as m; print('peer ready: Django', django.get_version(), '/ django-helpdesk', m.version('django-helpdesk'))"
