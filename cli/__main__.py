"""`python -m sipvis.cli ...` (and `torchrun -m sipvis.cli ...`) runs the `sipvis` command."""

from sipvis.cli import main

main()
