"""tests/ecosystem: the Action, the workflows, the package and the cards against their ecosystems' rules."""

from __future__ import annotations

import sys
from pathlib import Path

# the synthetic reports of tests/gate (the golden cards' input) are reused here
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gate"))
