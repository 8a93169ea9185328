"""What a ransom note looks like, for files and database tables alike: a name in the style ransomware
families use (``README_TO_DECRYPT.txt``, ``HOW_TO_RECOVER_FILES.html``, ``_readme.txt``, a table called
``readme_to_recover``), or text that asks for payment to decrypt (several of the words below together)."""

from __future__ import annotations

import re

#: file or table names ransomware leaves (matched case-insensitively against the last path component)
NOTE_NAMES = re.compile(
    r"(readme.*(decrypt|recover|restore|unlock))|((decrypt|recover|restore|unlock).*(readme|files|data|instruction))"
    r"|how[_ -]?to[_ -]?(decrypt|recover|restore|unlock|back)|ransom|^_readme\.txt$|^!+.*(decrypt|recover)",
    re.IGNORECASE,
)

#: words a note uses; text with at least NOTE_WORDS_NEEDED different ones reads as a note
NOTE_WORDS = (
    "decrypt",
    "encrypted",
    "bitcoin",
    "btc",
    "monero",
    "wallet",
    "ransom",
    "private key",
    "tor browser",
    ".onion",
    "recover your",
    "your files",
    "your data",
    "payment",
    "pay ",
)
NOTE_WORDS_NEEDED = 3
#: a note is short text: longer files, or ones that are not mostly printable, are not read as notes
NOTE_MAX_BYTES = 64 * 1024


def note_name(name: str) -> bool:
    """The last component of ``name`` (a path or a table name) is named like a ransom note."""
    return bool(NOTE_NAMES.search(name.rsplit("/", 1)[-1]))


def note_words(text: str) -> list[str]:
    """The note words ``text`` uses."""
    lowered = text.lower()
    return [word for word in NOTE_WORDS if word in lowered]


def reads_like_note(data: bytes) -> bool:
    """Short, mostly printable text that uses several of the words ransom notes use."""
    if not data or len(data) > NOTE_MAX_BYTES:
        return False
    text = data.decode("utf-8", errors="replace")
    printable = sum(ch.isprintable() or ch.isspace() for ch in text)
    return printable >= 0.9 * len(text) and len(note_words(text)) >= NOTE_WORDS_NEEDED
