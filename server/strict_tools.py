"""MCP tools that refuse arguments they do not know.

The SDK builds each tool's argument model from the function's signature and silently drops
unknown arguments, so a misspelled parameter (``sigam``) would run with its default. Here the
input schema says ``additionalProperties: false`` and a call with an unknown argument fails
with a tool error that names it and the arguments the tool takes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver.tools import Tool
from pydantic import ConfigDict, model_validator


def strict_tool(fn: Callable[..., Any], **options: Any) -> Tool:
    """``Tool.from_function(fn, **options)`` with unknown arguments forbidden."""
    tool = Tool.from_function(fn, **options)
    base = tool.fn_metadata.arg_model
    accepted = {info.alias or name for name, info in base.model_fields.items()}
    tool_name = tool.name

    def known_arguments(cls: type, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - accepted)
            if unknown:
                names = ", ".join(repr(k) for k in unknown)
                raise ValueError(f"{tool_name} takes no argument {names}; its arguments are {', '.join(sorted(accepted))}")
        return data

    namespace = {
        "__module__": base.__module__,
        "model_config": ConfigDict(extra="forbid"),
        "_known_arguments": model_validator(mode="before")(classmethod(known_arguments)),
    }
    arguments = type(base.__name__, (base,), namespace)
    tool.fn_metadata.arg_model = arguments
    tool.parameters["additionalProperties"] = False
    return tool
