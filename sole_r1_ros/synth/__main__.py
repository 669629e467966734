"""``python -m sole_r1_ros.synth``."""

from .cli import main

raise SystemExit(main())
