#!/bin/sh
# Register alltoken-mcp with Claude Code.
#
#   ALLTOKEN_API_KEY=sk-... sh manifests/claude-code-add.sh          # for you, in every project
#   sh manifests/claude-code-add.sh project                          # for this repository (.mcp.json)
#
# User (and local) scope store the key itself in ~/.claude.json, which only you can read, so the
# server works however Claude Code was started. Project scope writes .mcp.json, which is usually
# committed: it stores the reference ${ALLTOKEN_API_KEY}, and Claude Code expands it from its own
# environment when it starts the server.
#
# The server name comes before -e: -e takes several values and would swallow a name after it.
set -eu

scope="${1:-user}"
case "$scope" in
  user | local)
    : "${ALLTOKEN_API_KEY:?set ALLTOKEN_API_KEY to your AllToken key first}"
    key="$ALLTOKEN_API_KEY"
    ;;
  project)
    key='${ALLTOKEN_API_KEY}'
    ;;
  *)
    echo "usage: $0 [user|local|project]" >&2
    exit 2
    ;;
esac

claude mcp add alltoken --scope "$scope" -e "ALLTOKEN_API_KEY=$key" -- uvx alltoken-mcp
