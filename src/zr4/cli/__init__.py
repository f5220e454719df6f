"""zr4's command line: thin Typer layers over library functions."""
