"""`python -m chaosbus.cli`, the same as the `chaosbus` entry point."""

from chaosbus.cli.main import main

main()
