"""The one CSV reader behind `gpubp train --data`, `gpubp predict` and `load_file`.

A table of numbers separated by commas, one row per line. The first line that
holds anything is a header only when one of its fields is not a number: a
first row written as `1e-3`, `inf` or `-2.5E+02` is data, never skipped. Lines
starting with `#` (numpy.savetxt writes its header that way) and blank lines
before or after the rows are skipped, and every skipped line is listed, so a
caller can say what it left out. Anything else that is not a row of numbers is
an error naming the line.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy

from ..errors import ArgumentError, DatasetError

HEADER_CHOICES = ("auto", "yes", "no")  # auto: a first line with a field that is not a number is a header


@dataclass
class CsvTable:
    """The numbers of a CSV file, and the lines that were not rows of numbers."""

    path: Path
    values: numpy.ndarray  # float64, (rows, columns), in the file's order
    lines: list[int]  # the file's line number (from 1) of each row
    header: str | None = None  # the header line's text, when there was one
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line number, what it was)
    note: str | None = None  # something the reader could not decide for the caller

    def check_finite(self, what: str = "the data") -> None:
        """Refuse NaN and infinities, naming the first line that holds one."""
        bad = ~numpy.isfinite(self.values)
        if bad.any():
            row, column = (int(i[0]) for i in numpy.nonzero(bad))
            raise DatasetError(
                f"{self.path} line {self.lines[row]}, column {column + 1} is {self.values[row, column]}: "
                f"{what} holds NaN or infinite values; remove or impute them first"
            )

    def describe(self) -> str:
        """'read 5 rows of 3 values from rows.csv; skipped line 1 (a header: ...)'."""
        rows, columns = self.values.shape
        text = f"read {rows} row{'s' * (rows != 1)} of {columns} value{'s' * (columns != 1)} from {self.path.name}"
        if self.skipped:
            shown = ", ".join(f"{n} ({what})" for n, what in self.skipped[:5])
            more = f" and {len(self.skipped) - 5} more" if len(self.skipped) > 5 else ""
            text += f"; skipped line{'s' * (len(self.skipped) > 1)} {shown}{more}"
        return text + (f"; {self.note}" if self.note else "")


def is_number(text: str) -> bool:
    """Whether one CSV field is a number as NumPy reads it: 1, -2.5, 1e-3, inf and nan are."""
    try:
        float(text)
    except ValueError:
        return False
    return "_" not in text  # Python's float() takes 1_000; NumPy's parser does not


def _fields(line: str) -> list[str]:
    """The fields of one line, with quotes removed as the csv module reads them, and spaces stripped."""
    return [f.strip() for f in next(csv.reader([line]))]


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def read_csv(path, header="auto") -> CsvTable:
    """Read a table of numbers from the CSV file `path`.

    header: "auto" (the first line is a header when one of its fields is not a
    number), "yes" (the first line is a header whatever it holds) or "no".
    Missing values, ragged rows, words among the numbers, tabs and an empty file
    raise DatasetError naming the line. NaN and infinities are returned as read.
    """
    if header not in HEADER_CHOICES:
        raise ArgumentError(f"header must be one of {', '.join(HEADER_CHOICES)}; got {header!r}")
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"data file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: drop the byte-order mark some programs write
    except UnicodeDecodeError as e:
        raise DatasetError(
            f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); is it really a CSV file?"
        ) from None
    lines = text.split("\n")  # read_text turns \r\n and \r into \n
    content = [n for n, line in enumerate(lines, 1) if line.strip() and not line.lstrip().startswith("#")]
    if not content:
        raise DatasetError(f"{path} holds no rows of numbers: it is empty, or only blank lines and # comments")
    for n in content:
        if "\t" in lines[n - 1]:
            raise DatasetError(f"{path} line {n} holds a tab: a .csv file must separate its values with commas")
    first, last = content[0], content[-1]
    skipped = [(n, "a # comment") for n, line in enumerate(lines, 1) if line.lstrip().startswith("#")]
    for n in range(first, last):
        if not lines[n - 1].strip():
            raise DatasetError(
                f"{path} line {n} is blank, between rows of data: is a value missing there? "
                "Every row must hold a number in every column"
            )

    table_header = None
    if header == "yes" or header == "auto" and _is_header(path, first, lines[first - 1]):
        table_header = lines[first - 1].strip()
        skipped.append((first, f"a header: {_short(table_header)}"))
        content = content[1:]
        if not content:
            raise DatasetError(f"{path} holds a header on line {first} and no rows of numbers after it")
    skipped.sort()

    rows = [lines[n - 1] for n in content]
    try:
        values = numpy.loadtxt(rows, delimiter=",", quotechar='"', comments=None, ndmin=2, dtype=numpy.float64)
    except ValueError:
        raise _first_bad_row(path, content, rows) from None
    if len(values) != len(rows):  # cannot happen: every line given is non-blank; checked all the same
        raise DatasetError(f"{path}: read {len(values)} rows from {len(rows)} lines of data")
    if table_header is not None:
        names = _fields(table_header)
        if len(names) != values.shape[1]:
            raise DatasetError(
                f"{path}: the header on line {first} names {len(names)} columns, "
                f"but the rows hold {values.shape[1]} values each"
            )
    table = CsvTable(path, values, content, table_header, skipped)
    if table_header is not None and names[0] == "" and all(names[1:]):
        table.note = (
            "the header's first column has no name, as pandas writes its index: if that column is the index, "
            "write the file with DataFrame.to_csv(..., index=False)"
        )
    elif table_header is None and header == "auto" and _looks_like_column_numbers(rows[0]):
        table.note = (
            f"line {content[0]} ({_short(rows[0].strip(), 30)}) was read as data; if it holds pandas' "
            "column numbers, pass --header yes (or header='yes')"
        )
    return table


def _is_header(path: Path, n: int, line: str) -> bool:
    """The first line is a header when a field is not a number (an empty field is a missing number)."""
    fields = _fields(line)
    words = [f for f in fields if f and not is_number(f)]
    if words and all(p and all(is_number(q) for q in p.split()) for p in words):
        raise DatasetError(
            f"{path} line {n} holds numbers separated by spaces ({_short(line.strip(), 40)}): "
            "a .csv file must separate its values with commas"
        )
    return bool(words)


def _looks_like_column_numbers(line: str) -> bool:
    """0,1,2,…: what pandas writes as the header of a frame whose columns have no names."""
    fields = _fields(line)
    return len(fields) > 2 and fields == [str(k) for k in range(len(fields))]


def _first_bad_row(path: Path, numbers: list[int], rows: list[str]) -> DatasetError:
    """The error for the first line that is not a row of numbers like the first row."""
    width = None
    for n, line in zip(numbers, rows):
        fields = _fields(line)
        if width is None:
            width = (n, len(fields))
        if len(fields) != width[1]:
            return DatasetError(
                f"{path} line {n} holds {len(fields)} values, but line {width[0]} holds {width[1]}: "
                "every row must have the same number of columns"
            )
        if n == numbers[0] and fields[0] == "" and fields[1:] == [str(k) for k in range(len(fields) - 1)]:
            return DatasetError(
                f"{path} line {n} ({_short(line.strip(), 30)}) is the header pandas writes for a frame with "
                "unnamed columns and its index: write the file with DataFrame.to_csv(..., index=False)"
            )
        for column, value in enumerate(fields, 1):
            if not value:
                return DatasetError(
                    f"{path} line {n}, column {column} is empty: a missing value. Fill it in or drop the row"
                )
            if not is_number(value):
                return DatasetError(f"{path} line {n}, column {column} is not a number: {_short(value)}")
    return DatasetError(f"{path} is not a table of numbers separated by commas")
