"""`python -m audiotext` (and `torchrun -m audiotext`): the `audiotext` command."""

from audiotext.cli import main

main()
