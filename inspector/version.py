"""hfmem's version, and the line `hfmem --version` prints: a leaf module, read by every module
that names the version (the JSON, the User-Agent, digests) without importing the package's API."""

__version__ = "0.1.0"


def version_line() -> str:
    return f"hfmem {__version__}"
