"""`python -m fedrlprune` is the `fedrlprune` command."""

from fedrlprune.cli import main

raise SystemExit(main())
