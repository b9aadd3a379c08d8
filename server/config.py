"""Settings of a server process, as dataclasses whose field help is the command-line help.

``tir-agent serve`` turns ``ServerConfig``, ``TransportConfig`` and the pool's ``PoolConfig``
into its flags with transformers' ``HfArgumentParser``, so each setting has one source of truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tiragent.images import DEFAULT_MAX_PIXELS


@dataclass
class ServerConfig:
    """Settings of one server process."""

    roots: list[Path] = field(default_factory=lambda: [Path.cwd()], metadata={"help": "Folders the server may read images from."})
    output_root: Path | None = field(default=None, metadata={"help": "The only folder save_image writes to; default: the first root."})
    preview_size: int = field(default=512, metadata={"help": "Longest side of the preview returned with each result (0: no preview)."})
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata={"help": "Largest image accepted, in pixels."})
    store_memory_mb: float = field(default=2048, metadata={"help": "Memory for stored images; older ones spill to disk."})
    store_dir: Path | None = field(default=None, metadata={"help": "Spill folder for the image store; default: a temporary folder."})
    store_disk_mb: float = field(
        default=10240, metadata={"help": "Disk budget of the spill folder; past it the least recently used spilled images are deleted (their ids then expire)."}
    )
    progress_after_s: float = field(default=1.0, metadata={"help": "Send progress notifications for calls running longer than this."})
    tools_config: Path | None = field(default=None, metadata={"help": "TOML file of user checkpoints to serve as extra tools (see server/checkpoints.py)."})
    detector: Literal["auto", "learned", "logistic"] = field(
        default="auto",
        metadata={
            "help": "detect_degradations' detector when a client names none: 'auto' (the learned one where its weights load, else logistic), "
            "'learned' (CNN with severities, trained with camera-native photos, dim scenes and oriented close-ups: better on real photos and on "
            "degradations this project did not make, worse on CBSD68, on which 'logistic' was fitted; docs/benchmarks/detector_oriented.md), "
            "'logistic' (image statistics)."
        },
    )
    detector_weights: Path | None = field(default=None, metadata={"help": "Weights of the learned detector (tir-agent train detector); default: the shipped ones."})



@dataclass
class TransportConfig:
    """How clients reach the server."""

    transport: Literal["stdio", "http"] = field(default="stdio", metadata={"help": "stdio (the client starts the server) or streamable HTTP at http://HOST:PORT/mcp."})
    host: str = field(default="127.0.0.1", metadata={"help": "HTTP bind address; anything but loopback needs a bearer token."})
    port: int = field(default=8765, metadata={"help": "HTTP port."})
    token_file: Path | None = field(default=None, metadata={"help": "File holding the HTTP bearer token (default: $TIR_AGENT_TOKEN; never on the command line)."})
    max_body_mb: float = field(default=64.0, metadata={"help": "Largest HTTP request body (base64 images), MB."})
