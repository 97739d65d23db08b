import gzip
import io

import pytest

from backup_restore import errors
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
