"""SFT and RL training over MCP tool calls (issue: training)."""
