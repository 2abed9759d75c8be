"""``python -m fastanchor.cli``: the same as the ``fastanchor`` command."""

from . import main

raise SystemExit(main())
