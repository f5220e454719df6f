"""Which model files a boot needs: the manifest (data/models.yaml), the settings, the selection.

The renderer sizes the image's disks from it and the image's model manager (``zr4.image.models``)
downloads what it selects, so both read one list. Importable without Jinja2, Typer or the Hub client.
"""
