"""Streaming extraction of `data[i].b64_json` from an image task answer, for `get_image(b64_sink=...)`.

A completed image task carries each image as one base64 JSON string: 27 MB of JSON for a 20 MB image.
`B64JsonScanner` takes the body in arbitrary network chunks and splits it into two streams:

* the base64 text of every `b64_json` member of an object inside the top-level `data` array, handed out
  as `B64Piece`s (4-character aligned, about `piece_chars` long, escapes and whitespace removed) for
  `decode_piece` to turn into image bytes;
* the rest of the JSON, with each of those values replaced by `null`: small, parsed into `ImageTask`
  once the body has ended.

So the image is never held whole, neither as text nor as bytes. Only real object keys count: the scanner
is a small JSON tokenizer that tracks nesting, keys and strings, so a "b64_json" inside a prompt, an
error message or a nested object is left alone. It checks structure only as far as it needs to; the
remainder is validated by the model parser afterwards.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Protocol

__all__ = ["B64JsonScanner", "B64Piece", "B64ScanError", "ImageSink", "decode_piece"]

PIECE_CHARS = 1024 * 1024
"""Base64 characters per piece (a multiple of 4): 768 KiB of image, ~2 ms to decode."""
MAX_REMAINDER = 256 * 1024
"""The JSON outside the base64 values is a few KB; more than this is not an image task answer (and JSON
dense in small objects would cost ~200x its size once parsed)."""
MAX_KEY_BYTES = 256  # longer keys are kept in the remainder but never compared: none of ours is that long
MAX_DATA_URL_HEADER = 256

_B64_KEY = "b64_json"
_DATA_KEY = "data"
_WHITESPACE = b" \t\r\n"
_SIMPLE_ESCAPES = ((b"\\/", b"/"), (b"\\n", b""), (b"\\r", b""), (b"\\t", b""))
_UNICODE_ESCAPE = re.compile(rb"\\u([0-9a-fA-F]{4})")
_BASE64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/=]")
_STRING_STOP = re.compile(rb'["\\]')
# Bytes that may make up a number, true, false or null; anything else outside a string is structure.
_LITERAL = frozenset(b"-+.0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_SPACE = frozenset(_WHITESPACE)


class ImageSink(Protocol):
    """Receives the decoded bytes of `data[index].b64_json`, in order, a piece at a time."""

    async def write(self, index: int, data: bytes) -> None: ...


class B64ScanError(ValueError):
    """The body is not a well-formed image task answer (not JSON, truncated, or bad base64)."""


@dataclass(frozen=True, slots=True)
class B64Piece:
    index: int  # position in `data`
    text: bytes  # clean base64, a multiple of 4 characters (padded if it is the value's last piece)
    offset: int  # characters of the same value before this piece, for error messages


def decode_piece(piece: B64Piece) -> bytes:
    """The image bytes of one piece; `B64ScanError` naming the value and position if it is not base64."""
    try:
        return base64.b64decode(piece.text, validate=True)
    except (binascii.Error, ValueError) as exc:
        # Name the problem ourselves where we can: binascii's wording differs between Python versions.
        inner_padding = piece.text.rstrip(b"=").find(b"=")
        if inner_padding >= 0:
            raise B64ScanError(
                f"data[{piece.index}].b64_json has characters after its '=' padding "
                f"(character {piece.offset + inner_padding})"
            ) from None
        bad = _NOT_BASE64.search(piece.text)
        where = (
            f" at character {piece.offset + bad.start()} ({chr(piece.text[bad.start()])!r})"
            if bad is not None
            else ""
        )
        raise B64ScanError(f"data[{piece.index}].b64_json is not valid base64{where}: {exc}") from None


# ------------------------------------------------------------------------------------------ tokenizer

_ROOT, _OBJECT, _ARRAY = "root", "object", "array"
# What a container expects next. Objects: key → colon → value → comma (then key again, or the end).
_KEY, _COLON, _VALUE, _COMMA, _END = "key", "colon", "value", "comma", "end"
# Scanner modes: between tokens, inside an ordinary string, inside a b64_json value (first deciding
# whether it is a `data:` URL).
_STRUCTURE, _STRING, _B64_START, _B64 = "structure", "string", "b64_start", "b64"


class _Frame:
    __slots__ = ("count", "expect", "key", "kind")

    def __init__(self, kind: str, expect: str) -> None:
        self.kind = kind
        self.expect = expect
        self.key: str | None = None  # the member being read (objects)
        self.count = 0  # members or elements begun so far


class B64JsonScanner:
    """Incremental splitter of an image task body; see the module docstring.

    `feed(chunk)` returns the base64 pieces completed by that chunk; `finish()` checks the body was
    complete and returns the remainder JSON. Any problem raises `B64ScanError`.
    """

    def __init__(self, *, piece_chars: int = PIECE_CHARS, max_remainder: int = MAX_REMAINDER) -> None:
        if piece_chars <= 0 or piece_chars % 4:
            raise ValueError("piece_chars must be a positive multiple of 4")
        self._piece_chars = piece_chars
        self._max_remainder = max_remainder
        self._stack = [_Frame(_ROOT, _VALUE)]
        self._mode = _STRUCTURE
        self._in_literal = False
        self._offset = 0  # body bytes before the current chunk
        self._remainder = bytearray()
        self._pieces: list[B64Piece] = []
        # an ordinary string
        self._escape_pending = False  # the chunk ended right after a backslash
        self._is_key = False
        self._key = bytearray()
        # the current b64_json value
        self._index = -1
        self._seen: set[int] = set()
        self._start = bytearray()  # the value's first bytes, until we know whether it is a data: URL
        self._carry = b""  # an escape cut off at the end of the previous chunk
        self._clean = bytearray()  # base64 characters not yet handed out
        self._handed_out = 0
        self._padded = False

    def feed(self, chunk: bytes) -> list[B64Piece]:
        position = 0
        # Remainder bytes are copied in slices: from `copy_from` up to where a b64_json value starts.
        copy_from: int | None = None if self._mode in (_B64_START, _B64) else 0
        while position < len(chunk):
            if self._mode == _STRUCTURE:
                position, starts_value = self._structure(chunk, position)
                if starts_value:  # `position` is just past the opening quote of a b64_json value
                    assert copy_from is not None
                    self._remainder += chunk[copy_from : position - 1]
                    self._remainder += b"null"
                    copy_from = None
            elif self._mode == _STRING:
                position = self._string(chunk, position)
            elif self._mode == _B64_START:
                position = self._b64_start(chunk, position)
            else:
                position = self._b64(chunk, position)
                if self._mode == _STRUCTURE:  # the value ended; its closing quote is not copied
                    copy_from = position
        if copy_from is not None:
            self._remainder += chunk[copy_from:]
        self._offset += len(chunk)
        if len(self._remainder) > self._max_remainder:
            raise B64ScanError(
                f"more than {self._max_remainder} bytes of JSON outside the b64_json values: "
                "not an image task answer"
            )
        pieces, self._pieces = self._pieces, []
        return pieces

    def finish(self) -> bytes:
        """The JSON without the base64 values, once the whole body has been fed."""
        if self._mode == _STRUCTURE and len(self._stack) == 1 and self._stack[0].expect == _END:
            return bytes(self._remainder)
        if self._mode in (_B64_START, _B64):
            inside = f"inside data[{self._index}].b64_json"
        elif self._mode == _STRING:
            inside = "inside a string"
        elif len(self._stack) > 1:
            inside = f"with {len(self._stack) - 1} object(s)/array(s) still open"
        else:
            inside = "before any JSON value"
        raise B64ScanError(f"the body ended early ({self._offset} bytes), {inside}")

    # -- structure ------------------------------------------------------------------------------

    def _fail(self, position: int, what: str) -> B64ScanError:
        return B64ScanError(f"{what} at byte {self._offset + position}")

    def _structure(self, chunk: bytes, position: int) -> tuple[int, bool]:
        """Tokens between strings, one byte at a time (this part of the body is small).

        Returns the next position and whether a b64_json value has just begun.
        """
        stack = self._stack
        while position < len(chunk):
            byte = chunk[position]
            if byte in _LITERAL:
                if not self._in_literal:
                    self._begin_value(position)
                    self._in_literal = True
                position += 1
                continue
            self._in_literal = False
            position += 1
            if byte in _SPACE:
                continue
            frame = stack[-1]
            if byte == 0x22:  # "
                if frame.kind == _OBJECT and frame.expect == _KEY:
                    frame.expect = _COLON
                    frame.count += 1
                    self._is_key = True
                    self._key.clear()
                    self._mode = _STRING
                    return position, False
                self._begin_value(position - 1)
                if self._at_b64_value():
                    self._start_b64_value(position - 1)
                    return position, True
                self._is_key = False
                self._mode = _STRING
                return position, False
            if byte in (0x7B, 0x5B):  # { [
                self._begin_value(position - 1)
                stack.append(_Frame(_OBJECT, _KEY) if byte == 0x7B else _Frame(_ARRAY, _VALUE))
            elif byte in (0x7D, 0x5D):  # } ]
                kind = _OBJECT if byte == 0x7D else _ARRAY
                empty_ok = frame.count == 0 and frame.expect == (_KEY if kind == _OBJECT else _VALUE)
                if frame.kind != kind or not (frame.expect == _COMMA or empty_ok):
                    raise self._fail(position - 1, f"unexpected {chr(byte)!r}")
                stack.pop()
            elif byte == 0x3A and frame.expect == _COLON:  # :
                frame.expect = _VALUE
            elif byte == 0x2C and frame.expect == _COMMA:  # ,
                frame.expect = _KEY if frame.kind == _OBJECT else _VALUE
            else:
                raise self._fail(position - 1, f"unexpected {chr(byte)!r}")
        return position, False

    def _begin_value(self, position: int) -> None:
        frame = self._stack[-1]
        if frame.expect != _VALUE:
            raise self._fail(position, "unexpected value" if frame.kind != _ROOT else "text after the JSON")
        if frame.kind == _ARRAY:
            frame.count += 1
        frame.expect = _END if frame.kind == _ROOT else _COMMA

    def _at_b64_value(self) -> bool:
        """Is the value just begun `{..., "data": [..., {..., "b64_json": <here>}]}`?"""
        stack = self._stack
        return (
            len(stack) == 4
            and stack[1].kind == _OBJECT
            and stack[1].key == _DATA_KEY
            and stack[2].kind == _ARRAY
            and stack[3].kind == _OBJECT
            and stack[3].key == _B64_KEY
        )

    # -- ordinary strings -----------------------------------------------------------------------

    def _string(self, chunk: bytes, position: int) -> int:
        """Skip to the closing quote, keeping the text if it is a key (to recognise ours)."""
        start = position
        if self._escape_pending:
            self._escape_pending = False
            position += 1
        while True:
            stop = _STRING_STOP.search(chunk, position)
            if stop is None:
                self._keep_key(chunk[start:])
                return len(chunk)
            position = stop.start()
            if chunk[position] == 0x5C:  # a backslash: the next byte is escaped, whatever it is
                if position + 1 == len(chunk):
                    self._escape_pending = True
                    self._keep_key(chunk[start:])
                    return len(chunk)
                position += 2
                continue
            self._keep_key(chunk[start:position])
            self._mode = _STRUCTURE
            if self._is_key:
                self._stack[-1].key = self._decoded_key()
            return position + 1

    def _keep_key(self, text: bytes) -> None:
        if self._is_key and len(self._key) <= MAX_KEY_BYTES:
            self._key += text[: MAX_KEY_BYTES + 1 - len(self._key)]

    def _decoded_key(self) -> str | None:
        raw = bytes(self._key)
        if len(raw) > MAX_KEY_BYTES:
            return None
        if b"\\" not in raw:
            return raw.decode("utf-8", "replace")
        try:
            key: str = json.loads(b'"' + raw + b'"')
        except ValueError:
            return None  # an invalid escape: the final parse reports it
        return key

    # -- b64_json values ------------------------------------------------------------------------

    def _start_b64_value(self, position: int) -> None:
        index = self._stack[2].count - 1
        if index in self._seen:
            raise self._fail(position, f"data[{index}] has a second b64_json member")
        self._seen.add(index)
        self._index = index
        self._mode = _B64_START
        self._start.clear()
        self._carry = b""
        self._clean.clear()
        self._handed_out = 0
        self._padded = False

    def _b64_start(self, chunk: bytes, position: int) -> int:
        """Collect the value's first bytes: a `data:<type>;base64,` prefix (some encoders send a data:
        URL) is skipped; anything else is base64 from the first character."""
        quote = chunk.find(b'"', position)
        end = len(chunk) if quote < 0 else quote
        self._start += chunk[position:end]
        start = bytes(self._start)
        if start.startswith(b"data:"):
            comma = start.find(b",")
            if comma < 0:
                if quote >= 0 or len(start) > MAX_DATA_URL_HEADER:
                    raise self._fail(end, f"data[{self._index}].b64_json is a data: URL without base64 data")
                return end
            if b";base64" not in start[:comma].lower():
                raise self._fail(end, f"data[{self._index}].b64_json is a data: URL but not a base64 one")
            start = start[comma + 1 :]
        elif len(start) < 5 and quote < 0 and b"data:".startswith(start):
            return end  # too short to tell yet
        self._mode = _B64
        self._take_base64(start, final=False, position=end)
        return end

    def _b64(self, chunk: bytes, position: int) -> int:
        quote = chunk.find(b'"', position)
        if quote < 0:
            self._take_base64(chunk[position:], final=False, position=len(chunk))
            return len(chunk)
        self._take_base64(chunk[position:quote], final=True, position=quote)
        self._mode = _STRUCTURE
        return quote + 1

    def _take_base64(self, text: bytes, *, final: bool, position: int) -> None:
        """Append the base64 characters of `text` (raw JSON string content) and hand out full pieces."""
        text = self._carry + text if self._carry else text
        self._carry = b""
        if b"\\" in text:
            text = self._unescape(text, final=final, position=position)
        if any(space in text for space in (b" ", b"\n", b"\r", b"\t")):
            text = text.translate(None, _WHITESPACE)  # wrapped base64 (MIME style)
        self._clean += text
        usable = len(self._clean) if final else len(self._clean) - len(self._clean) % 4
        if final:
            if usable % 4 == 1:
                raise self._fail(
                    position,
                    f"data[{self._index}].b64_json is not valid base64: "
                    f"{self._handed_out + usable} characters cannot be a complete encoding (truncated?)",
                )
            self._clean += b"=" * (-usable % 4)  # tolerate stripped padding
            self._hand_out(len(self._clean), position)
        elif usable >= self._piece_chars:
            self._hand_out(usable, position)

    def _hand_out(self, count: int, position: int) -> None:
        if count == 0:
            return
        if self._padded:
            # A piece that ended in padding must have been the last: two encodings glued together
            # would otherwise decode piece by piece into garbage.
            raise self._fail(position, f"data[{self._index}].b64_json has characters after its '=' padding")
        text = bytes(self._clean[:count])
        del self._clean[:count]
        self._pieces.append(B64Piece(self._index, text, self._handed_out))
        self._handed_out += count
        self._padded = text.endswith(b"=")

    def _unescape(self, text: bytes, *, final: bool, position: int) -> bytes:
        """Resolve the escapes JSON encoders put in base64: `\\/`, `\\n`/`\\r`/`\\t` (line wrapping)
        and `\\uXXXX` of a base64 or whitespace character (e.g. .NET writes `+` as `\\u002B`)."""
        if not final:
            # An escape cut by the chunk boundary waits for the next chunk.
            cut = text.rfind(b"\\", max(0, len(text) - 5))
            if cut >= 0 and (cut == len(text) - 1 or (text[cut + 1] == 0x75 and len(text) - cut < 6)):
                text, self._carry = text[:cut], text[cut:]
        if b"\\\\" in text or text.endswith(b"\\"):
            # An escaped backslash, or (at the end of the value) an escaped quote: neither is base64.
            raise self._fail(position, f"data[{self._index}].b64_json contains an escaped '\\\\' or '\"'")
        # With no escaped backslash every backslash starts its own escape, so these replacements
        # cannot overlap or create new escapes.
        for escaped, plain in _SIMPLE_ESCAPES:
            text = text.replace(escaped, plain)
        if b"\\u" in text:
            text = _UNICODE_ESCAPE.sub(self._unicode_escape, text)
        if b"\\" in text:
            at = text.index(b"\\")
            escape = text[at : at + 2].decode("ascii", "replace")
            raise self._fail(position, f"data[{self._index}].b64_json contains the escape {escape!r}")
        return text

    def _unicode_escape(self, match: re.Match[bytes]) -> bytes:
        character = chr(int(match.group(1), 16))
        if character in _BASE64_ALPHABET:
            return character.encode("ascii")
        if character in " \t\r\n":
            return b""
        raise B64ScanError(
            f"data[{self._index}].b64_json contains {match.group().decode('ascii')!r}, not a base64 character"
        )
