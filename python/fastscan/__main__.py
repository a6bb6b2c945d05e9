"""`python -m fastscan`: the same as the `fastscan` command."""

from fastscan.cli import main

main()
