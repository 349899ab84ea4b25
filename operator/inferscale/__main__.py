"""``python -m inferscale``: the same command line as the ``inferscale`` entry point."""

from inferscale.cli.main import main

raise SystemExit(main())
