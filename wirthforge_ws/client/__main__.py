"""``python -m wirthforge_ws.client``: runs the command-line monitor (:mod:`.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
