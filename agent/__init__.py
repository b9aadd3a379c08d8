"""The policy and the MCP client loop (issue: agent)."""
