"""``python -m robustvae.runs ...``: the command line of :mod:`robustvae.runs`."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
