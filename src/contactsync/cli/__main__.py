"""`python -m contactsync.cli …` is the `contactsync` command."""

from contactsync.cli import main

main()
