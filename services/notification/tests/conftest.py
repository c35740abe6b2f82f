"""Shared set-up: the generated stubs on the path (run.sh and run-tests.sh put them there;
this makes `python -m pytest` from services/notification work too)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVICE = HERE.parent
ROOT = SERVICE.parent.parent

for path in (os.environ.get("BOOKMESH_NOTIFICATION_GEN", str(ROOT / ".tools" / "notification-gen")), str(SERVICE)):
    if path not in sys.path:
        sys.path.insert(0, path)
