"""`make bench`: run every benchmark and print its table."""

from __future__ import annotations

from . import batch, decode

if __name__ == "__main__":
    decode.main()
    batch.main()
