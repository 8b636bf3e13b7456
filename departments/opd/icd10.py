"""ICD-10 codes: the shipped list (WHO 3-character categories with titles, plus the
4-character codes most used in Pakistani OPDs), searched in memory.

The list is read once, on first use, from data/icd10_categories.tsv (about 2,200 rows,
100 KB) and indexed:
- codes sorted by their undotted form, so a code prefix ("j0", "J06.", "e11") is a
  bisect range;
- a sorted vocabulary of title words, each with the rows it appears in, so every word of
  a query matches by prefix ("typh fev" finds "Typhoid fever").
A search then costs a few bisects and set intersections: well under a millisecond.

`register()` makes "icd10" a checked lookup of task forms (hms.forms.register_lookup); it
is called when this package's operations or routes are imported, i.e. at app start.
"""

from __future__ import annotations

import bisect
import re
import threading
from dataclasses import dataclass
from pathlib import Path

DATA_FILE = Path(__file__).with_name("data") / "icd10_categories.tsv"
MAX_LIMIT = 100
_WORD = re.compile(r"[a-z0-9]+")
_CODE_QUERY = re.compile(r"^[A-Za-z]\d{0,2}(\.?\d{0,2})?$")
# Abbreviations written on OPD slips every day; a query that is exactly one of these
# lists its codes first, then the title-word matches.
ABBREVIATIONS: dict[str, tuple[str, ...]] = {
    "age": ("A09", "A09.0", "A09.9"),
    "af": ("I48", "I48.9"),
    "bph": ("N40",),
    "ccf": ("I50.0",),
    "chf": ("I50.0",),
    "ckd": ("N18", "N18.9"),
    "copd": ("J44", "J44.1", "J44.9"),
    "cva": ("I64",),
    "dm": ("E11", "E11.9", "E14.9"),
    "t2dm": ("E11", "E11.9"),
    "t1dm": ("E10", "E10.9"),
    "gerd": ("K21", "K21.9"),
    "gord": ("K21", "K21.9"),
    "htn": ("I10",),
    "ibs": ("K58", "K58.9"),
    "ihd": ("I25", "I25.9"),
    "lbp": ("M54.5",),
    "lrti": ("J22",),
    "mi": ("I21", "I21.9"),
    "oa": ("M19.9", "M17.9"),
    "pid": ("N73",),
    "pud": ("K27",),
    "ra": ("M06.9",),
    "tb": ("A15", "A16"),
    "urti": ("J06", "J06.9"),
    "uti": ("N39.0",),
}


@dataclass(frozen=True)
class Icd10Code:
    code: str
    title: str

    @property
    def is_category(self) -> bool:
        return len(self.code) == 3

    def as_dict(self) -> dict:
        return {"code": self.code, "title": self.title}


class Icd10Index:
    """An immutable in-memory index of the code list. Thread-safe once built."""

    def __init__(self, rows: list[Icd10Code]):
        self.rows = sorted(rows, key=lambda r: (_undotted(r.code), r.code))
        self.by_code = {r.code: r for r in self.rows}
        self._keys = [_undotted(r.code) for r in self.rows]
        self._lower_titles = [r.title.lower() for r in self.rows]
        words: dict[str, set[int]] = {}
        for i, row in enumerate(self.rows):
            for word in _WORD.findall(row.title.lower()):
                words.setdefault(word, set()).add(i)
        self._vocabulary = sorted(words)
        self._postings = [frozenset(words[w]) for w in self._vocabulary]

    @classmethod
    def from_file(cls, path: Path = DATA_FILE) -> "Icd10Index":
        rows = []
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.rstrip("\n")
                if not line or line.startswith("#"):
                    continue
                code, title = line.split("\t", 1)
                rows.append(Icd10Code(code.strip().upper(), title.strip()))
        return cls(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def categories(self) -> list[Icd10Code]:
        return [r for r in self.rows if r.is_category]

    def get(self, code: str) -> Icd10Code | None:
        return self.by_code.get(normalise_code(code))

    def search(self, q: str, limit: int = 20) -> list[Icd10Code]:
        q = (q or "").strip()
        limit = max(1, min(int(limit), MAX_LIMIT))
        if not q:
            return []
        if _CODE_QUERY.match(q):
            found = self._code_prefix(q)
            if found:
                return found[:limit]
        first = [self.by_code[c] for c in ABBREVIATIONS.get(q.lower(), ()) if c in self.by_code]
        rest = [r for r in self._words(q, limit) if r not in first]
        return (first + rest)[:limit]

    def _code_prefix(self, q: str) -> list[Icd10Code]:
        prefix = _undotted(q.upper())
        lo = bisect.bisect_left(self._keys, prefix)
        hi = bisect.bisect_left(self._keys, prefix + "\uffff")
        return self.rows[lo:hi]

    def _words(self, q: str, limit: int) -> list[Icd10Code]:
        words = _WORD.findall(q.lower())
        if not words:
            return []
        hits: set[int] | None = None
        # The longest word first: usually the most selective.
        for word in sorted(set(words), key=len, reverse=True):
            lo = bisect.bisect_left(self._vocabulary, word)
            hi = bisect.bisect_left(self._vocabulary, word + "\uffff")
            matched: set[int] = set()
            for postings in self._postings[lo:hi]:
                matched |= postings
            hits = matched if hits is None else hits & matched
            if not hits:
                return []
        # Titles that begin with a query word first ("fever" -> "Fever, unspecified"
        # before "Typhoid fever"), then code order, which keeps a category next to its
        # subcodes, the way clinicians read the list.
        starts = tuple(words)
        ranked = sorted(hits, key=lambda i: (not self._lower_titles[i].startswith(starts), i))
        return [self.rows[i] for i in ranked[:limit]]


def _undotted(code: str) -> str:
    return code.replace(".", "")


def normalise_code(code: str) -> str:
    """'j06.9 ' -> 'J06.9'; 'J069' -> 'J06.9'."""
    code = (code or "").strip().upper()
    if len(code) == 4 and "." not in code and code[1:].isalnum():
        code = f"{code[:3]}.{code[3]}"
    return code


_index: Icd10Index | None = None
_lock = threading.Lock()


def index() -> Icd10Index:
    """The shipped list, loaded on first use and kept for the life of the process."""
    global _index
    if _index is None:
        with _lock:
            if _index is None:
                _index = Icd10Index.from_file()
    return _index


def search_icd10(q: str, limit: int = 20) -> list[dict]:
    """Codes whose code starts with `q` ("J06", "j06.9", "e11"), else whose title words
    all start with the words of `q` ("typhoid", "acute uri"), case-insensitive; in code
    order, at most `limit` (1 to 100). Each item is {"code", "title"}."""
    return [row.as_dict() for row in index().search(q, limit)]


def get_icd10(code: str) -> dict | None:
    row = index().get(code)
    return None if row is None else row.as_dict()


def unknown_codes(values: set[str]) -> set[str]:
    """The lookup validator: the submitted values that are not codes of the list."""
    idx = index()
    return {v for v in values if idx.get(v) is None}


def register() -> None:
    """Make "icd10" a checked lookup for task forms. Idempotent."""
    from hms import forms

    forms.register_lookup("icd10", unknown_codes, label="ICD-10 code")
