"""``python -m robustvae rerun|sweep|show ...``: the same as ``python -m robustvae.runs``."""

from .runs import main

if __name__ == "__main__":
    raise SystemExit(main())
