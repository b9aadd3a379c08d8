"""Built-in policies, one module each. Adding a policy means adding its module here."""

from tiragent.agent.policies import exhaustive, fixed, oracle, qwen, random_policy, shipped  # noqa: F401
