"""Session-wide test settings: no test reads or writes the user's own scan cache."""

import os
import tempfile

_CACHE_DIR = tempfile.TemporaryDirectory(prefix="fastscan-test-cache-")
os.environ["FASTSCAN_CACHE"] = os.path.join(_CACHE_DIR.name, "scan-cache.sqlite3")
