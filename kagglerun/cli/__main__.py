"""`python -m kagglerun.cli`: the kagglerun command."""

from . import main

main()
