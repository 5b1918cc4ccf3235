"""`python -m renewdesk` is the `renewdesk` command."""
import sys

from renewdesk.cli import main

sys.exit(main())
