"""``python -m forensix`` = the ``forensix`` command."""

from .cli import main

main()
