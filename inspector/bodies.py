"""Response bodies read within bounds: never more than a Range's bytes (a server ignoring the
Range starts a multi-GB 200), at most MAX_JSON_BYTES of metadata, and content codings undone layer
by layer within that limit (a few KB of nested gzip can decode to GBs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .cache import MAX_JSON_BYTES
from .connections import PlainResponse
from .errors import NetworkError

if TYPE_CHECKING:
    import requests

#: Content codings we ask for on metadata reads and decode ourselves, within the body's limit
#: (header Range reads ask for none). More layers than this in one answer are refused (our policy).
ACCEPT_ENCODING = "gzip, deflate"


MAX_CODINGS = 4


def body_limit(byte_range: tuple[int, int] | None) -> int:
    """The most decoded bytes a request's body is read to: a Range's end (a server may ignore the
    Range and send the file from its start), else MAX_JSON_BYTES and one more, to tell it was over."""
    return byte_range[1] + 1 if byte_range is not None else MAX_JSON_BYTES + 1


def read_limited(raw: requests.Response | PlainResponse, byte_range: tuple[int, int] | None,
                 deadline: float | None = None, what: str = "response", limit: int | None = None) -> bytes:
    """The body, but never more than needed: a Range's bytes even when a server ignores the Range
    and starts a multi-GB 200 (the connection is then dropped), and at most MAX_JSON_BYTES of
    anything else, counted after decoding (a few KB of nested gzip can decode to GBs: each layer is
    decoded only as far as the limit). A body still arriving at the deadline is abandoned."""
    limit = limit if limit is not None else body_limit(byte_range)
    if byte_range is not None and raw.status_code == 206:
        limit = min(limit, byte_range[1] - byte_range[0] + 1)
    try:
        body = _collect(raw, limit, what, deadline)
        if byte_range is None and len(body) > MAX_JSON_BYTES:
            raise NetworkError(f"{what}: the server sent more than {MAX_JSON_BYTES >> 20} MiB of metadata")
        return body[:limit]
    finally:
        raw.close()


def _collect(raw: Any, limit: int, what: str, deadline: float | None = None) -> bytes:
    """The decoded body, read until `limit` bytes (or its end); past `deadline`, NetworkError."""
    chunks, got = [], 0
    for chunk in decoded_chunks(raw, limit, what):
        chunks.append(chunk)
        got += len(chunk)
        if got >= limit:
            break
        if deadline is not None and time.monotonic() > deadline:
            raise NetworkError(f"{what}: gave up at the --timeout deadline while the body arrived")
    return b"".join(chunks)


def decoded_chunks(raw: Any, limit: int, what: str) -> Iterator[bytes]:
    """The body's chunks, decoded by us (never by urllib3 or requests, which decode a chunk whole)."""
    if getattr(raw, "from_cache", False) or getattr(raw, "_content_consumed", False):
        content = getattr(raw, "_content", None)  # decoded already, within its limit, or cached so
        yield (content or b"")[: limit + 1]
        return
    stream = raw.raw.stream(64 * 1024, decode_content=False) if not isinstance(raw, PlainResponse) \
        else raw.iter_content(64 * 1024)
    decoder = Decoder.of(raw.headers.get("Content-Encoding"), limit, what)
    for chunk in stream:
        yield decoder.feed(chunk) if decoder is not None else chunk
        if decoder is not None and decoder.full:
            return


def decode_before_caching(limit: int, what: str) -> Callable[..., Any]:
    """A response hook for the cached sessions: requests-cache reads the whole body to save it
    (`response.content`, decoded by urllib3 at once), so a compressed body is read here first,
    decoded within `limit`, and left in the response as its content."""

    def hook(response: Any, *args: Any, **kwargs: Any) -> Any:
        if (getattr(response, "from_cache", False) or response._content_consumed
                or not content_codings(response.headers.get("Content-Encoding"))):
            return response  # (a plain body is read as far as its Content-Length, at most the limit)
        try:
            content = _collect(response, limit, what)
        except BaseException:
            response.close()
            raise
        response._content = content[:limit]
        response._content_consumed = True
        response.close()
        return response

    return hook


def content_codings(header: str | None) -> list[str]:
    return [c for c in (p.strip().lower() for p in (header or "").split(",")) if c and c != "identity"]


class Decoder:
    """Content codings undone layer by layer (RFC 9110 8.4: listed in the order applied), each
    layer's output capped at `limit` bytes: a decompression bomb costs `limit` bytes of memory per
    layer at most, never its decoded size. Once a layer reaches the cap, `full` is set and the
    rest of the body is not read."""

    def __init__(self, codings: list[str], limit: int, what: str) -> None:
        import zlib

        self.limit, self.what, self.full = limit, what, False
        self.layers = []
        for c in reversed(codings):
            if c in ("gzip", "x-gzip"):
                self.layers.append([16 + zlib.MAX_WBITS, zlib.decompressobj(16 + zlib.MAX_WBITS), 0, b""])
            elif c == "deflate":
                self.layers.append([zlib.MAX_WBITS, zlib.decompressobj(zlib.MAX_WBITS), 0, b""])
            else:
                raise NetworkError(f"{what}: the server sent the body as {c[:20]!r}, which hfmem did not ask for")

    @classmethod
    def of(cls, header: str | None, limit: int, what: str) -> Decoder | None:
        codings = content_codings(header)
        if len(codings) > MAX_CODINGS:
            raise NetworkError(f"{what}: the server sent the body in {len(codings)} layers of content coding")
        return cls(codings, limit, what) if codings else None

    def feed(self, data: bytes) -> bytes:
        import zlib

        for layer in self.layers:
            try:
                data = self._layer(layer, data, zlib)
            except zlib.error:
                raise NetworkError(f"{self.what}: the server sent a broken compressed body") from None
        return data

    def _layer(self, layer: list[Any], data: bytes, zlib: Any) -> bytes:
        wbits, d, produced, first = layer
        out = []
        while data and not self.full:
            budget = self.limit - produced
            if budget <= 0:
                self.full = True
                break
            try:
                piece = d.decompress(data, budget)
            except zlib.error:
                if wbits != zlib.MAX_WBITS or produced or first:
                    raise
                # A "deflate" body without its zlib header (raw deflate), as some servers send it.
                wbits = layer[0] = -zlib.MAX_WBITS
                d = layer[1] = zlib.decompressobj(wbits)
                continue
            layer[3] = first = first or bool(piece)
            out.append(piece)
            produced += len(piece)
            if d.unconsumed_tail:
                self.full = produced >= self.limit
                data = d.unconsumed_tail
                if not piece and not self.full:
                    break
                continue
            if d.eof and d.unused_data and wbits > 16:  # gzip's next member (concatenated files)
                data = d.unused_data
                d = layer[1] = zlib.decompressobj(wbits)
                continue
            break
        layer[2] = produced
        return b"".join(out)
