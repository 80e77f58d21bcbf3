"""`python -m bench`: the benchmark orchestrator (see bench/run.py)."""
import sys

from .run import main

sys.exit(main())
