"""zr4: a validated profile in, a working ComfyUI + SteadyDancer GPU image out."""

__version__ = "0.1.0"
