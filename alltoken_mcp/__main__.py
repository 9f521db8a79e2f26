"""`python -m alltoken_mcp` runs the same entry point as the `alltoken-mcp` script."""

from alltoken_mcp.cli import main

raise SystemExit(main())
