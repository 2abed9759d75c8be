"""``python -m fastanchor``: the same as the ``fastanchor`` command."""

from .cli import main

raise SystemExit(main())
