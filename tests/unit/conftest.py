"""Make `ansible_collections.pilito.priority_queue` importable for the unit tests, through the same
build/collections link that ansible-playbook uses (`make build/collections/ansible_collections/pilito/priority_queue`)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = ROOT / "build" / "collections"
LINK = COLLECTIONS / "ansible_collections" / "pilito" / "priority_queue"

if not LINK.exists():
    raise RuntimeError(f"{LINK} is missing: run `make {LINK.relative_to(ROOT)}` in {ROOT}")
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))
