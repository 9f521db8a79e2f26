"""alltoken-mcp: an MCP server that delegates chat, image and video work to AllToken."""

__version__ = "0.1.0"

__all__ = ["__version__"]
