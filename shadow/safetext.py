"""Traffic-derived text made safe to print on a terminal (pure).

Paths, headers, bodies and diff values come from clients, V1 and V2. Printed as they are, a
control character would reach the terminal: ESC starts colour, cursor and hyperlink (OSC 8)
sequences, C1 codes do the same on some terminals, and bidi overrides (U+202E) reorder what is
shown. `visible()` replaces each of them with its `\\uXXXX` escape, a form that is also valid
inside JSON and TOML strings, so JSON printed through it stays valid and equal. Rich markup is
not this module's concern: the views put traffic into `rich.text.Text`, which is never parsed.
"""

from __future__ import annotations

# Unicode format characters that reorder or hide text: bidi embeddings, overrides, isolates and
# marks, plus the line and paragraph separators some terminals and editors break lines on
_INVISIBLE = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A),
              0x2028, 0x2029)
_UNSAFE = (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), *_INVISIBLE)

_ONE_LINE = {cp: f"\\u{cp:04x}" for cp in _UNSAFE}
_MULTILINE = {cp: e for cp, e in _ONE_LINE.items() if cp not in (0x0A, 0x09)}


def visible(value: object, *, multiline: bool = False) -> str:
    """`value` as text whose every control character is shown as its `\\uXXXX` escape.

    Newline and tab are escaped too unless `multiline` (bodies, indented JSON). Everything else,
    brackets included, is kept as it is."""
    text = value if isinstance(value, str) else str(value)
    return text.translate(_MULTILINE if multiline else _ONE_LINE)
