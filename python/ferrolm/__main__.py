"""``python -m ferrolm``: the same command line as ``ferrolm``."""

from ferrolm.cli import main

raise SystemExit(main())
