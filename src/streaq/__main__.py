"""``python -m streaq``: the same as the ``streaq`` command."""

from streaq.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
