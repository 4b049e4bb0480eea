"""``python -m rankrm`` (and ``torchrun -m rankrm``) run the command line."""

from rankrm.cli import main

main()
