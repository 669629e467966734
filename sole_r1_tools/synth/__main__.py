"""``python -m sole_r1_tools.synth``."""

from .cli import main

raise SystemExit(main())
