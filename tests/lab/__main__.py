"""``python -m tests.lab cleanup|status``: remove what killed test runs left behind, or show the slots."""

from __future__ import annotations

import sys

from tests.lab import slots


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "status"
    if cmd == "cleanup":
        removed = slots.cleanup_stale()
        print("\n".join(removed) if removed else "nothing stale")
        return 0
    if cmd == "status":
        for index in range(slots.SLOTS):
            path = slots.RUN_DIR / f"slot-{index}.lock"
            fd = slots._try_lock(index) if path.exists() else None
            if path.exists() and fd is None:
                owner = path.read_text().strip() or "?"
                print(f"slot {index}: in use by pid {owner} (bridge flb{index})")
            elif fd is not None:
                slots.Slot(index, fd).release()
        return 0
    print("usage: python -m tests.lab cleanup|status", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
