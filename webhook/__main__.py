"""`python -m webhook` runs the same CLI as the `lifecycle-webhook` console script."""

from webhook.cli import main

raise SystemExit(main())
