import os
import sys

# Before torch loads OpenMP (see app.py): idle threads sleep instead of spinning on a shared machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .cli.main import main  # noqa: E402

sys.exit(main())
