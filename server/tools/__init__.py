"""The built-in tools, one module per task. Adding a module means adding its name here."""

TOOL_MODULES = ["denoise", "deblur", "derain", "dehaze", "dejpeg", "sr", "lowlight", "learned"]
