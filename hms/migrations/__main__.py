"""`python -m hms.migrations "message"`: autogenerate a migration against a scratch SQLite DB."""

import sys
import tempfile

from hms.migrations import revision, upgrade

with tempfile.TemporaryDirectory() as tmp:
    url = f"sqlite:///{tmp}/scratch.db"
    upgrade(url)
    revision(url, sys.argv[1] if len(sys.argv) > 1 else "schema change")
