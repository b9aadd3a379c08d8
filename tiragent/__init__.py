"""tir-agent: agentic image restoration over the Model Context Protocol.

The repository's top-level folders are mapped onto one namespace so that their
names cannot collide with other installed packages:

    server/ -> tiragent.server   restoration tools and the shared model-call pool
    agent/  -> tiragent.agent    policies and the MCP client loop
    train/  -> tiragent.train    SFT and RL training
    eval/   -> tiragent.eval     degradations, metrics, benchmarks
    tiragent/                    image I/O, errors and the `tir-agent` CLI
"""

__version__ = "0.1.0"
