"""Corpus metadata tables: CSV (with or without header) and one sheet of an .xlsx workbook, read
with the Python standard library only. Every row carries `where` = "file:line" (the spreadsheet row
number for xlsx) so that malformed inputs raise `PrepareError` naming the file and line.
"""

from __future__ import annotations

import csv
import os
import re
import zipfile
from collections.abc import Iterator, Sequence
from typing import NamedTuple
from xml.etree import ElementTree


class PrepareError(ValueError):
    """A malformed or inconsistent corpus input; the message names the file (and line)."""


class Row(NamedTuple):
    where: str  # "file:line"
    cells: dict[str, str] | list[str]  # header -> cell, or the cells of a header-less CSV


def read_csv_rows(
    path: str | os.PathLike, *, header: bool = True, required: Sequence[str] = ()
) -> Iterator[Row]:
    """Non-empty rows of a CSV file. With a header, `required` columns must exist."""
    path = str(path)
    if not os.path.isfile(path):
        raise PrepareError(f"{path}: no such file")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        columns = None
        if header:
            columns = next(reader, None)
            if columns is None:
                raise PrepareError(f"{path}:1: empty file, expected a header row")
            missing = [c for c in required if c not in columns]
            if missing:
                raise PrepareError(f"{path}:1: missing column(s) {missing}; header is {columns}")
        for cells in reader:
            where = f"{path}:{reader.line_num}"
            if not any(c.strip() for c in cells):
                continue
            if columns is None:
                yield Row(where, cells)
                continue
            if len(cells) != len(columns):
                raise PrepareError(f"{where}: {len(cells)} cells, the header has {len(columns)}")
            yield Row(where, dict(zip(columns, cells)))


def cell(row: Row, column: str | int, min_columns: int = 0) -> str:
    """One cell of a row (by name, or by position in a header-less row), stripped."""
    if isinstance(column, int):
        if len(row.cells) < max(min_columns, column + 1):
            raise PrepareError(f"{row.where}: expected at least {max(min_columns, column + 1)} "
                               f"columns, got {len(row.cells)}")  # fmt: skip
        return row.cells[column].strip()
    return row.cells[column].strip()


def number(row: Row, column: str | int, min_columns: int = 0) -> float:
    """A numeric cell as float; PrepareError naming file:line and the column otherwise."""
    text = cell(row, column, min_columns)
    try:
        return float(text)
    except ValueError:
        raise PrepareError(f"{row.where}: column {column!r} is not a number: {text!r}") from None


# --- xlsx -----------------------------------------------------------------------------------------

_NS = {
    "m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
    "r": "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
    "rel": "http://schemas.openxmlformats.org/package/2006/relationships",
}


def _column_index(ref: str) -> int:
    """'A1' -> 0, 'AB7' -> 27."""
    letters = re.match(r"[A-Z]+", ref).group(0)
    index = 0
    for ch in letters:
        index = index * 26 + ord(ch) - ord("A") + 1
    return index - 1


def _cell_text(c: ElementTree.Element, shared: list[str]) -> str:
    kind = c.get("t")
    if kind == "inlineStr":
        return "".join(t.text or "" for t in c.iter(f"{{{_NS['m']}}}t"))
    v = c.find("m:v", _NS)
    if v is None or v.text is None:
        return ""
    if kind == "s":
        return shared[int(v.text)]
    if kind in (None, "n"):  # numbers: integral values without a trailing ".0"
        value = float(v.text)
        return str(int(value)) if value.is_integer() else v.text
    return v.text


def read_xlsx_rows(
    path: str | os.PathLike, sheet: str, *, required: Sequence[str] = ()
) -> list[Row]:
    """Rows of sheet `sheet` below its header row (the first non-empty row), as Row(dict)."""
    path = str(path)
    if not os.path.isfile(path):
        raise PrepareError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as z:
            workbook = ElementTree.fromstring(z.read("xl/workbook.xml"))
            rels = ElementTree.fromstring(z.read("xl/_rels/workbook.xml.rels"))
            targets = {r.get("Id"): r.get("Target") for r in rels.findall("rel:Relationship", _NS)}
            sheets = {s.get("name"): s.get(f"{{{_NS['r']}}}id")
                      for s in workbook.iter(f"{{{_NS['m']}}}sheet")}  # fmt: skip
            if sheet not in sheets:
                raise PrepareError(f"{path}: no sheet {sheet!r} (sheets: {sorted(sheets)})")
            target = targets[sheets[sheet]].lstrip("/")
            target = target if target.startswith("xl/") else f"xl/{target}"
            shared = []
            if "xl/sharedStrings.xml" in z.namelist():
                strings = ElementTree.fromstring(z.read("xl/sharedStrings.xml"))
                shared = ["".join(t.text or "" for t in si.iter(f"{{{_NS['m']}}}t"))
                          for si in strings.findall("m:si", _NS)]  # fmt: skip
            data = ElementTree.fromstring(z.read(target))
    except (zipfile.BadZipFile, KeyError, ElementTree.ParseError) as e:
        raise PrepareError(f"{path}: not a readable xlsx workbook ({e})") from None
    rows, columns = [], None
    for r in data.iter(f"{{{_NS['m']}}}row"):
        values: dict[int, str] = {}
        for c in r.findall("m:c", _NS):
            values[_column_index(c.get("r"))] = _cell_text(c, shared).strip()
        if not any(values.values()):
            continue
        where = f"{path}[{sheet}]:{r.get('r')}"
        width = max(values) + 1
        cells = [values.get(i, "") for i in range(width)]
        if columns is None:
            columns = cells
            missing = [c for c in required if c not in columns]
            if missing:
                raise PrepareError(f"{where}: missing column(s) {missing}; header is {columns}")
            continue
        cells += [""] * (len(columns) - len(cells))
        rows.append(Row(where, dict(zip(columns, cells))))
    if columns is None:
        raise PrepareError(f"{path}[{sheet}]: empty sheet, expected a header row")
    return rows
