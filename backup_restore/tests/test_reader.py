import gzip
import io
import json

import pytest

from backup_restore import errors
from backup_restore.guarded_stream import PARSE_BUFFER
from backup_restore.reader import BackupReader, open_backup_stream

HEADER = b'{"format": "clinica-tenant-data", "version": 1, '


def read_all(data: bytes) -> list[tuple[str, list, list]]:
    """Every section of a file, rows included, as the importer consumes them."""
    reader = BackupReader(open_backup_stream(io.BytesIO(data)))
    reader.header()
    return [(label, names, list(rows)) for label, names, rows in reader.sections()]


def test_a_file_is_read_section_by_section_plain_or_gzipped():
    # given a small file, plain and gzipped
    data = HEADER + b'"data": [{"model": "a.b", "fields": ["id", "x"], "rows": [[1, {"k": [2.5]}], [2, null]]}]}'

    for blob in (data, gzip.compress(data)):
        # when it is read
        reader = BackupReader(open_backup_stream(io.BytesIO(blob)))
        header = reader.header()
        sections = [(label, names, list(rows)) for label, names, rows in reader.sections()]

        # then the header comes first, then each section's rows
        assert header == {"format": "clinica-tenant-data", "version": 1}
        assert sections == [("a.b", ["id", "x"], [[1, {"k": [pytest.approx(2.5)]}], [2, None]])]


BAD_FILES = {
    "not_an_object": (b"[]", errors.WrongFormatError, "El archivo no es un objeto JSON."),
    "no_data": (b"{}", errors.WrongFormatError, "El archivo no tiene la clave `data`."),
    "data_not_a_list": (HEADER + b'"data": 1}', errors.WrongFormatError, "`data` debe ser una lista."),
    "section_not_an_object": (HEADER + b'"data": [1]}', errors.WrongFormatError, "Cada sección de `data` debe ser un objeto."),
    "rows_before_model": (
        HEADER + b'"data": [{"rows": []}]}', errors.WrongFormatError,
        "Una sección debe declarar `model` y `fields` antes de `rows`."),
    "rows_not_a_list": (
        HEADER + b'"data": [{"model": "a.b", "fields": [], "rows": 3}]}', errors.WrongFormatError, "`rows` debe ser una lista."),
    "row_not_a_list": (
        HEADER + b'"data": [{"model": "a.b", "fields": [], "rows": [3]}]}', errors.InvalidRowError,
        "Cada fila debe ser una lista de valores."),
    "truncated": (HEADER + b'"data": [{"model": "a.b", "fields": [], "rows": [[1', errors.InvalidJSONError, None),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_malformed_file_is_refused_with_its_reason(case):
    # given a malformed file
    data, error, reason = BAD_FILES[case]

    # when it is read to the end
    with pytest.raises(error) as raised:
        read_all(data)

    # then the error says why (in the default language)
    assert raised.value.details["reason"]
    if reason is not None:
        assert raised.value.details["reason"] == reason


@pytest.mark.parametrize("broken", [
    b'"data": [{"model": "clinica.paciente", "fields": ["nombre"], "rows": [["Juan P\xc3\xa9rez Soto 4455667", tru]]}]}',
    b'"data": [{"model": "clinica.paciente", "fields": ["nombre"], "rows": [["Juan P\xc3\xa9rez Soto 4455667" "x"]]}]}',
    b'"data": [{"model": "clinica.paciente", "fields": ["nombre"], "rows": [["Juan P\xc3\xa9rez Soto 4455667\\q"]]}]}',
])
def test_a_parse_error_says_why_without_quoting_the_upload(broken):
    # given a file that breaks next to a patient's name; when it is read
    with pytest.raises(errors.InvalidJSONError) as raised:
        read_all(HEADER + broken)
    # then the reason is the parser's, and no byte of the rows around the error is in it
    reason = raised.value.details["reason"]
    assert reason and "error" in reason
    assert "rez" not in reason and "4455667" not in reason and "Soto" not in reason


class _Trickle:
    """A stream that answers at most `step` bytes per read, so that reads split the text anywhere."""

    def __init__(self, data: bytes, step: int):
        self.data, self.step, self.pos = data, step, 0

    def read(self, size=-1):
        size = self.step if size is None or size < 0 else min(size, self.step)
        chunk = self.data[self.pos : self.pos + size]
        self.pos += len(chunk)
        return chunk


def _single_value(text: bytes, step: int, limits=None):
    data = HEADER + b'"data": [{"model": "a.b", "fields": ["id", "x"], "rows": [[7, ' + text + b"]]}]}"
    reader = BackupReader(_Trickle(data, step), limits=limits, key_of=lambda label: "id")
    reader.header()
    return [row for _label, _names, rows in reader.sections() for row in rows][0][1]


@pytest.mark.parametrize("step", [1, 2, 3, 5, 7, 11, 13, 1 << 18])
def test_lone_surrogate_escapes_become_nul_wherever_the_reads_split_them(step):
    # given escapes: a pair, lone ones, and backslashes that make "\u" plain text
    text = rb'"\ud83d\ude00|\ud800|\udc00|\ud800\u0041|\\ud800|\\\ud800|\\\\\ud83d\ude01|\uD83D\uDE02"'

    # when read in reads of `step` bytes
    value = _single_value(text, step)

    # then pairs decode, lone ones are NUL (which the importer refuses), plain text stays
    assert value == "\U0001F600|\x00|\x00|\x00A|\\ud800|\\\x00|\\\\\U0001F601|\U0001F602"


@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 18])
def test_a_run_of_digits_python_cannot_convert_is_refused_naming_the_row(step):
    # given a number of 4,301 digits (ijson's C backend would crash the process on it)
    with pytest.raises(errors.InvalidValueError) as raised:
        _single_value(b"9" * 4301, step)
    assert raised.value.details["pk"] == 7 and raised.value.details["field"] == "x"
    # while 4,300 digits, the most Python converts, are read
    assert _single_value(b"9" * 4300, step) == int("9" * 4300)


def test_a_row_past_the_value_limit_is_refused_with_the_limit_naming_the_row():
    from backup_restore.guarded_stream import ReadLimits

    limits = ReadLimits(max_bytes=1 << 30, max_value_bytes=1 << 20)
    with pytest.raises(errors.InvalidValueError) as raised:
        _single_value(b'"' + b"x" * (3 << 20) + b'"', 1 << 18, limits)
    assert raised.value.details == {
        "model": "a.b", "pk": 7, "field": "x", "max_value_bytes": 1 << 20, "reason": raised.value.details["reason"]}
    # a value under the limit is read
    assert _single_value(b'"' + b"x" * (1 << 19) + b'"', 1 << 18, limits) == "x" * (1 << 19)


# -- the header's row counts (issue 18): a row past its model's count is refused as it begins

def _counted_file(declared: dict, written: tuple[str, int], made: tuple[str, int]):
    """A file whose header declares `declared`: a small section written out, then a section whose
    rows are made only as they are read, all the same size, so that `made` shows how far the reader went."""
    from backup_restore.tests.conftest import RowStream

    (small, small_rows), (label, sent) = written, made
    first = {"model": small, "fields": ["id", "x"], "rows": [[n, "x" * 20] for n in range(small_rows)]}
    header = {"format": "clinica-tenant-data", "version": 1, "models": declared}
    before = (json.dumps(header)[:-1] + ', "data": [' + json.dumps(first)
              + ', {"model": "%s", "fields": ["id", "x"], "rows": [' % label).encode()
    return RowStream(before, lambda n: b'[%d, "%s"]' % (100_000_000 + n, b"x" * 20), sent, b"]}]}")


def _read_with_counts(stream, declared):
    reader = BackupReader(stream, key_of=lambda label: "id")
    reader.header()
    for _label, _names, rows in reader.sections(declared=declared):
        for _row in rows:
            pass


ROW_SIZE = len(b'[100000000, "xxxxxxxxxxxxxxxxxxxx"],')
# The reader is at most a parse buffer or two ahead of the parser: that many rows past the refused one.
ROWS_AHEAD = 3 * PARSE_BUFFER // ROW_SIZE


def test_a_section_is_refused_at_the_first_row_past_its_declared_count_and_one_short_at_its_end():
    # given the upload: a header declaring 3,000 rows of a model, and a section of a million
    declared = {"a.b": 2, "a.c": 3_000}
    many = _counted_file(declared, ("a.b", 2), ("a.c", 1_000_000))

    # when it is read with the header's counts
    with pytest.raises(errors.CountMismatchError) as raised:
        _read_with_counts(many, declared)

    # then the 3,001st row is refused as it begins, the rest of the file left unread
    assert raised.value.details["model"] == "a.c"
    assert (raised.value.details["declared"], raised.value.details["read"]) == (3_000, 3_001)
    assert raised.value.details["reason"]
    assert many.made <= 3_001 + ROWS_AHEAD

    # and a section with fewer rows than declared is read to its end and refused there
    few = _counted_file(declared, ("a.b", 2), ("a.c", 2_999))
    with pytest.raises(errors.CountMismatchError) as raised:
        _read_with_counts(few, declared)
    assert (raised.value.details["declared"], raised.value.details["read"]) == (3_000, 2_999)
    assert few.made == 2_999


def test_rows_of_a_model_the_header_does_not_declare_are_refused_at_the_first():
    # given a header that declares one model, and a section of a million rows of another
    declared = {"a.b": 2}
    stream = _counted_file(declared, ("a.b", 2), ("a.z", 1_000_000))

    # when it is read with the header's counts
    with pytest.raises(errors.CountMismatchError) as raised:
        _read_with_counts(stream, declared)

    # then its first row is refused, the rest left unread
    assert (raised.value.details["model"], raised.value.details["declared"], raised.value.details["read"]) == ("a.z", None, 1)
    assert stream.made <= 1 + ROWS_AHEAD


# -- the scanner's reader (BackupReader) against ijson's (EventReader): the same rows, the same refusals

def _outcome(reader_class, data: bytes, step: int, declared=None):
    """What a reader makes of a file read `step` bytes at a time: its header and sections, or its refusal."""
    from backup_restore.guarded_stream import ReadLimits

    reader = reader_class(_Trickle(data, step), limits=ReadLimits(max_bytes=1 << 20, max_value_bytes=4000),
                          key_of=lambda label: "id")
    read = []
    try:
        read.append(reader.header())
        for label, names, rows in reader.sections(declared=declared):
            read.append((label, names, []))
            for row in rows:  # a row longer than its fields refused, as the importer refuses it
                if len(row) > len(names):
                    raise errors.InvalidRowError(details={"model": label, "pk": row[0]})
                read[-1][2].append(row)
    except errors.RestoreError as exc:
        details = {k: v for k, v in exc.details.items() if k != "reason"}
        if isinstance(exc, errors.InvalidJSONError):
            details.pop("model", None)  # BackupReader also says in which section the parse failed
        return type(exc).__name__, details
    return "read", read


def _export_layout(rows_text: bytes) -> bytes:
    """A file laid out as the export writes it (a row a line), with one section of `rows_text`."""
    return (b'{"format": "clinica-tenant-data", "version": 1, "models": {"a.b": {"count": 3}},\n "data": [\n'
            b'{"model": "a.b", "fields": ["id", "x", "y"], "rows": [\n' + rows_text + b']}\n], "tail": [1, {"z": null}]}\n')


ROWS = (b'[1, "\xc3\xa1\\n\\"],\\n[", {"k": [1.5, null, true, -2E+3]}],\n'
        b'[2, 100000.0, [[[]],\n[{}]]],\n'
        b'[3, -0, "\\ud83d\\ude00 \\u00e9 9999999999999999999"]')
TRICKY = {
    "as_exported": ROWS,
    "nested_value_over_lines": ROWS.replace(b"[[[]],\n[{}]]", b"[[1],\n[2],\n[3]]"),
    "nested_129_deep": ROWS.replace(b"[[[]],\n[{}]]", b"[" * 129 + b"]" * 129),
    "nested_128_deep": ROWS.replace(b"[[[]],\n[{}]]", b"[" * 128 + b"]" * 128),
    "nested_3000_deep": ROWS.replace(b"[[[]],\n[{}]]", b"[" * 3000 + b"]" * 3000),
    "nested_deep_over_lines": ROWS.replace(b"[[[]],\n[{}]]", b"[\n" * 200 + b"]\n" * 200),
    "too_many_values": ROWS.replace(b"[[[]],\n[{}]]", b"1, 2, 3, 4"),
    "a_row_not_a_list": ROWS.replace(b"[2, 100000.0, [[[]],\n[{}]]]", b'{"id": 2}'),
    "nan": ROWS.replace(b"100000.0", b"NaN"),
    "minus_infinity": ROWS.replace(b"100000.0", b"-Infinity"),
    "digits_over_the_limit": ROWS.replace(b"100000.0", b"9" * 5000),
    "a_string_over_the_value_limit": ROWS.replace(b"100000.0", b'"' + b"x" * 9000 + b'"'),
    "white_space_over_the_value_limit": ROWS.replace(b"100000.0", b"1" + b" " * 9000),
    "not_utf_8": ROWS.replace(b"\xc3\xa1", b"\xc3("),
    "a_raw_control_character": ROWS.replace(b"\\n", b"\n"),
    "a_trailing_comma": ROWS + b",\n",
    "no_comma": ROWS.replace(b"],\n[2", b"]\n[2"),
}


@pytest.mark.parametrize("step", [1, 7, 64, 1 << 18])
@pytest.mark.parametrize("declared", [None, {"a.b": 3}, {"a.b": 2}])
@pytest.mark.parametrize("case", list(TRICKY))
def test_the_scanners_reader_reads_and_refuses_as_ijsons(case, declared, step):
    # given a file laid out as exported, with something out of the ordinary in its rows
    from backup_restore.reader import EventReader

    data = _export_layout(TRICKY[case])

    # when both readers read it, a few bytes or a whole block at a time
    # then they read the same rows, or refuse it the same way, naming the same model, row and field
    assert _outcome(BackupReader, data, step, declared) == _outcome(EventReader, data, step, declared)


def test_the_scanners_reader_refuses_every_cut_and_corruption_of_a_file_as_ijsons():
    import random

    from backup_restore.reader import EventReader

    # given an exported file cut at every byte, and corrupted at random (seeded) in a thousand ways
    data = _export_layout(ROWS)
    files = [data[:end] for end in range(len(data))]
    rng = random.Random(20261207)
    for _ in range(1000):
        broken = bytearray(data)
        for _edit in range(rng.randint(1, 3)):
            at = rng.randrange(len(broken))
            byte = rng.choice(b'[]{},:"\\ 0123456789.eE-+tfnaulx\n\xc3')
            kind = rng.random()
            if kind < 0.4:
                broken[at] = byte
            elif kind < 0.7:
                del broken[at]
            else:
                broken.insert(at, byte)
        files.append(bytes(broken))

    # when both readers read each, then they agree: the same rows, or the same refusal
    for file in files:
        for step in (5, 1 << 18):
            ours, ijsons = _outcome(BackupReader, file, step), _outcome(EventReader, file, step)
            if ours != ijsons:
                # ijson names a key before it reads past it: where a broken byte follows a key that
                # is out of place, it says the format is wrong and the scanner says the JSON is
                assert (ours[0], ijsons[0]) == ("InvalidJSONError", "WrongFormatError"), file


def test_a_block_of_rows_is_parsed_whole_and_a_deep_value_in_it_refused_naming_its_row():
    # given a block of rows laid out as exported, one of them holding a value nested 200 deep
    rows = [b'[%d, "x", %s]' % (n, b"[" * 200 + b"]" * 200 if n == 700 else b"[1]") for n in range(1000)]
    data = _export_layout(b",\n".join(rows)).replace(b'"count": 3', b'"count": 1000')
    reader = BackupReader(io.BytesIO(data), key_of=lambda label: "id")
    reader.header()

    # when its rows are read, then the rows before it are given, and it is refused naming its key and field
    given = []
    with pytest.raises(errors.InvalidValueError) as raised:
        for _label, _names, rows_read in reader.sections():
            for batch in rows_read.batches():
                given += batch
    assert [row[0] for row in given] == list(range(700))
    assert (raised.value.details["pk"], raised.value.details["field"]) == (700, "y")
    assert raised.value.details["max_depth"] == 128


def test_a_string_past_the_value_limit_costs_the_limit_once_however_long_it_goes_on():
    import tracemalloc

    from backup_restore.guarded_stream import ReadLimits

    # given a row whose string goes on for 64 MiB, made as it is read, and a value limit of 2 MiB
    limit = 2 << 20
    stream = RowStreamOfOne(b'{"format": "x", "data": [{"model": "a.b", "fields": ["id", "x"], "rows": [\n[7, "',
                            b"x" * (1 << 20), 64)
    reader = BackupReader(stream, limits=ReadLimits(max_bytes=1 << 30, max_value_bytes=limit), key_of=lambda label: "id")
    reader.header()

    # when it is read
    tracemalloc.start()
    try:
        with pytest.raises(errors.InvalidValueError) as raised:
            for _label, _names, rows in reader.sections():
                list(rows)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    # then it is refused at the limit, naming the row and field, having held about the limit once
    assert (raised.value.details["pk"], raised.value.details["field"]) == (7, "x")
    assert peak < 1.5 * limit + 2 * PARSE_BUFFER * 4, peak


class RowStreamOfOne:
    """`head`, then `piece` `times` over, made as read (never whole in memory)."""

    def __init__(self, head: bytes, piece: bytes, times: int):
        self._parts = iter([head, *([piece] * times)])
        self._pending = b""

    def read(self, size: int = -1) -> bytes:
        while len(self._pending) < size:
            part = next(self._parts, None)
            if part is None:
                break
            self._pending += part
        data, self._pending = self._pending[:size], self._pending[size:]
        return data


@pytest.mark.parametrize("broken", [b'"Juan P\xc3(rez"', b"NaN", b"-Infinity", b'"Juan\\q"', b'"Juan\x01"', b"[1,]"])
def test_the_scanners_reader_refuses_what_is_not_json_saying_why_without_quoting_it(broken):
    # given a row holding something JSON does not allow, beside a patient's name
    data = _export_layout(b'[1, "Soto 4455667", ' + broken + b"]")

    # when it is read
    with pytest.raises(errors.InvalidJSONError) as raised:
        _outcome_or_raise(data)

    # then the reason is the parser's, without a byte of the upload
    reason = raised.value.details["reason"]
    assert reason.startswith("parse error: ")
    assert "Soto" not in reason and "4455667" not in reason and "Juan" not in reason and "\\x" not in reason


def _outcome_or_raise(data: bytes):
    reader = BackupReader(io.BytesIO(data))
    reader.header()
    for _label, _names, rows in reader.sections():
        list(rows)
