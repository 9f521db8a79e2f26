"""`alltoken-mcp register HOST` and `unregister HOST`: put this install into a host's MCP config, or take
it out again, without disturbing anything else in that config.

    arguments   the two subcommands' argparse definitions (imported by cli.py at start-up: argparse only)
    command     what register and unregister do, and everything they print
    hosts       where each host keeps its servers, how it spells an entry, how to check it
    launch      how this copy of alltoken-mcp is running, so that the host starts it the same way
    jsonedit    one member of a JSON config inserted, replaced or cut out in place
    tomledit    one [mcp_servers.NAME] table of Codex's config.toml added, replaced or cut out in place
    configfile  reading a config, and replacing it atomically with a backup
"""
