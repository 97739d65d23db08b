import gzip
import json
from decimal import Decimal

import pytest
from django.db import connection

from backup_restore import errors, utils
from backup_restore.tests.conftest import export_bytes, file_edit, restorable_snapshot, restore, section
from clinica.models import Cita, Paciente, Pago, Radiografia, Tratamiento
from core.testing import schema_fingerprint
from clinica.tests.factories import PacienteFactory, clinic_data_create


def test_round_trip_with_replace_restores_every_table_exactly_and_sequences_move_on(tenant_a, clinic_admin):
    # given a clinic, its export, and then damage: deletions, changes, additions
    data = clinic_data_create(usuario=clinic_admin)
    original = restorable_snapshot()
    file = export_bytes()
    Pago.objects.all().delete()
    Paciente.objects.filter(pk=data["referente"].pk).update(nombre="Cambiado", alergias={"x": 1})
    Tratamiento.objects.update(precio="1.00")
    PacienteFactory()
    pacientes_before = Paciente.objects.count()

    # when the file is restored with replace=true (gzipped, as the API can serve it)
    result = restore(gzip.compress(file), replace=True)

    # then every restorable table equals the original row by row
    assert restorable_snapshot() == original
    assert result.models["clinica.pago"].created == len(original["clinica.pago"])
    assert result.models["clinica.paciente"].deleted == pacientes_before
    assert result.models["clinica.paciente"].created == len(original["clinica.paciente"])
    assert set(result.skipped_models) >= {"usuarios.usuario", "bitacora.bitacora"}
    # and the next insert does not collide with a restored key
    nuevo = PacienteFactory()
    assert nuevo.pk > max(row[0] for row in original["clinica.paciente"])


def test_merge_brings_deleted_rows_back_keeps_added_rows_and_reverts_changed_ones(tenant_a, clinic_admin):
    # given an export, then a deleted cita, a changed paciente and a new paciente
    data = clinic_data_create(usuario=clinic_admin)
    file = export_bytes()
    original = restorable_snapshot()
    deleted = data["citas"][1]
    Cita.objects.filter(pk=deleted.pk).delete()
    Paciente.objects.filter(pk=data["paciente"].pk).update(nombre="Cambiado")
    added = PacienteFactory()

    # when restored with replace=false
    result = restore(file, replace=False)

    # then the deleted row is back, the change reverted and the new row kept
    assert Cita.objects.filter(pk=deleted.pk).exists()
    assert Paciente.objects.get(pk=data["paciente"].pk).nombre == data["paciente"].nombre
    assert Paciente.objects.filter(pk=added.pk).exists()
    assert result.models["clinica.cita"].created == 1
    assert result.models["clinica.cita"].updated == len(original["clinica.cita"]) - 1
    assert result.models["clinica.paciente"].deleted == 0
    snapshot = restorable_snapshot()
    snapshot["clinica.paciente"] = [r for r in snapshot["clinica.paciente"] if r[0] != added.pk]
    assert snapshot == original


def test_a_reference_to_a_user_missing_here_becomes_null(tenant_a, clinic_admin):
    # given a file whose cita and odontologo point to a user this clinic does not have
    data = clinic_data_create(usuario=clinic_admin)
    cita = data["citas"][0]

    def ghost_user(document):
        s = section(document, "clinica.cita")
        i = s["fields"].index("registrada_por_id")
        for row in s["rows"]:
            row[i] = 987654321 if row[0] == cita.pk else row[i]

    file = file_edit(export_bytes(), ghost_user)

    # when restored
    restore(file, replace=True)

    # then the reference is dropped, the row kept; existing users are kept
    assert Cita.objects.get(pk=cita.pk).registrada_por_id is None
    assert data["odontologo"].__class__.objects.get(pk=data["odontologo"].pk).usuario_id == clinic_admin.pk


def test_dry_run_reports_the_summary_and_changes_nothing(tenant_a, clinic_admin):
    # given a clinic and its export, then a deletion
    clinic_data_create(usuario=clinic_admin)
    file = export_bytes()
    pagos_in_file = Pago.objects.count()
    Pago.objects.all().delete()
    before = restorable_snapshot()

    # when a dry run restores it
    result = restore(file, replace=True, dry_run=True)

    # then the summary is computed but nothing changed
    assert result.dry_run is True
    assert result.models["clinica.pago"].created == pagos_in_file
    assert result.models["clinica.pago"].deleted == 0
    assert result.models["clinica.paciente"].created == len(before["clinica.paciente"])
    assert restorable_snapshot() == before


def _set(label, field, value, pk_of=lambda rows: rows[0][0]):
    def edit(document):
        s = section(document, label)
        i = s["fields"].index(field)
        target = pk_of(s["rows"])
        for row in s["rows"]:
            if row[0] == target:
                row[i] = value
    return edit


def _rename(document, label, new_label):
    section(document, label)["model"] = new_label


def _add_field(document):
    s = section(document, "clinica.paciente")
    s["fields"].append("color_favorito")
    for row in s["rows"]:
        row.append("azul")


def _drop_field(document):
    s = section(document, "clinica.paciente")
    i = s["fields"].index("nombre")
    del s["fields"][i]
    for row in s["rows"]:
        del row[i]


def _duplicate_row(document):
    s = section(document, "clinica.paciente")
    s["rows"].append(list(s["rows"][0]))
    # counted in the header too: an extra row past the count is refused as that, before any key is compared
    document["models"]["clinica.paciente"]["count"] += 1


def _duplicate_documento(document):
    s = section(document, "clinica.paciente")
    i = s["fields"].index("documento")
    s["rows"][1][i] = s["rows"][0][i]


BAD_FILES = {
    "not_json": (lambda f: b"esto no es JSON", errors.InvalidJSONError),
    "truncated_json": (lambda f: f[: len(f) * 2 // 3], errors.InvalidJSONError),
    "gzip_garbage": (lambda f: b"\x1f\x8b\x08\x00" + b"basura" * 50, errors.InvalidJSONError),
    "wrong_format_name": (lambda f: file_edit(f, lambda d: d.update(format="otro-formato")), errors.WrongFormatError),
    "future_version": (lambda f: file_edit(f, lambda d: d.update(version=99)), errors.UnsupportedVersionError),
    "another_tenant": (lambda f: file_edit(f, lambda d: d["tenant"].update(schema="test_b")), errors.OtherTenantError),
    "newer_migrations": (
        lambda f: file_edit(f, lambda d: d["migrations"].update(clinica="0999_futura")), errors.MigrationsNewerError),
    "unknown_model": (lambda f: file_edit(f, lambda d: _rename(d, "clinica.pago", "clinica.cobro")), errors.UnknownModelError),
    "unknown_field": (lambda f: file_edit(f, _add_field), errors.UnknownFieldError),
    "wrong_type": (lambda f: file_edit(f, _set("clinica.cita", "inicio", "no-es-fecha")), errors.InvalidValueError),
    "wrong_type_integer": (lambda f: file_edit(f, _set("clinica.cita", "duracion_minutos", "mucho")), errors.InvalidValueError),
    "too_long": (lambda f: file_edit(f, _set("clinica.paciente", "telefono", "9" * 31)), errors.InvalidValueError),
    "missing_required_field": (lambda f: file_edit(f, _drop_field), errors.MissingFieldError),
    "null_required_value": (lambda f: file_edit(f, _set("clinica.factura", "numero", None)), errors.MissingFieldError),
    "dangling_foreign_key": (lambda f: file_edit(f, _set("clinica.cita", "paciente_id", 987654321)), errors.DanglingForeignKeyError),
    "duplicate_primary_key": (lambda f: file_edit(f, _duplicate_row), errors.DuplicatePrimaryKeyError),
    "unique_violation": (lambda f: file_edit(f, _duplicate_documento), errors.UniqueViolationError),
    "negative_positive_integer": (lambda f: file_edit(f, _set("clinica.lineafactura", "cantidad", -1)), errors.ConstraintViolationError),
    "a_row_fewer_than_declared": (lambda f: file_edit(f, lambda d: section(d, "clinica.pago")["rows"].pop()),
                                  errors.CountMismatchError),
    "a_row_more_than_declared": (lambda f: file_edit(f, lambda d: d["models"]["clinica.cita"].update(
        count=d["models"]["clinica.cita"]["count"] - 1)), errors.CountMismatchError),
    "cut_short_and_closed_again": (lambda f: file_edit(f, lambda d: d.update(data=d["data"][:3])), errors.CountMismatchError),
    "a_section_not_declared": (lambda f: file_edit(f, lambda d: d["models"].pop("clinica.pago")), errors.CountMismatchError),
    "no_counts_in_the_header": (lambda f: file_edit(f, lambda d: d.pop("models")), errors.WrongFormatError),
}


@pytest.fixture
def exported_clinic(tenant_a, clinic_admin):
    clinic_data_create(usuario=clinic_admin)
    return export_bytes()


@pytest.mark.parametrize("replace", [True, False], ids=["replace", "merge"])
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_is_refused_with_a_clear_error_and_changes_nothing(exported_clinic, case, replace):
    # given a clinic and a broken file
    make, error = BAD_FILES[case]
    bad = make(exported_clinic)
    before = restorable_snapshot()

    # when it is restored
    with pytest.raises(errors.RestoreError) as raised:
        restore(bad, replace=replace)

    # then the error names what is wrong, and every table is unchanged
    assert isinstance(raised.value, error), raised.value.details
    assert raised.value.status_code == 400
    assert str(raised.value.message)
    assert restorable_snapshot() == before
    if error in (errors.InvalidValueError, errors.DuplicatePrimaryKeyError, errors.UniqueViolationError,
                 errors.DanglingForeignKeyError, errors.UnknownFieldError, errors.MissingFieldError):
        assert raised.value.details["model"].startswith("clinica.")
    if error in (errors.InvalidValueError, errors.DuplicatePrimaryKeyError, errors.UniqueViolationError,
                 errors.DanglingForeignKeyError) or case == "null_required_value":
        assert raised.value.details["pk"] is not None, raised.value.details
        assert raised.value.details["reason"]


def test_a_file_from_newer_code_is_refused_naming_every_unknown_migration(tenant_a, clinic_admin):
    # given a file from code with two migrations this code does not have
    clinic_data_create(usuario=clinic_admin)
    newer = file_edit(export_bytes(), lambda d: d["migrations"].update(clinica="0999_futura", bitacora="0998_futura"))

    # when it is restored
    with pytest.raises(errors.MigrationsNewerError) as raised:
        restore(newer, replace=True)

    # then both are listed, sorted, as "app.migration" (as the SQL restore lists them)
    assert raised.value.details["unknown_migrations"] == ["bitacora.0998_futura", "clinica.0999_futura"]


def test_a_file_of_another_clinic_is_accepted_when_explicitly_allowed(tenant_a, clinic_admin):
    # given a file that says it comes from another clinic
    clinic_data_create(usuario=clinic_admin)
    original = restorable_snapshot()
    file = file_edit(export_bytes(), lambda d: d["tenant"].update(schema="test_b"))

    # when restored with allow_other_tenant
    restore(file, replace=True, allow_other_tenant=True)

    # then it is restored
    assert restorable_snapshot() == original


def test_an_older_file_without_an_optional_field_is_accepted(tenant_a, clinic_admin):
    # given a file without a nullable field (as an older version would write it)
    data = clinic_data_create(usuario=clinic_admin)

    def drop(document):
        s = section(document, "clinica.paciente")
        i = s["fields"].index("fecha_nacimiento")
        del s["fields"][i]
        for row in s["rows"]:
            del row[i]

    file = file_edit(export_bytes(), drop)

    # when restored
    restore(file, replace=True)

    # then the missing field is null
    assert Paciente.objects.get(pk=data["referente"].pk).fecha_nacimiento is None
    assert connection.schema_name == "test_a"


# -- replace: rows loaded by COPY straight into the emptied tables (loader.DirectLoad._load)

AWKWARD_TEXT = "tab\tnew line\nreturn\rback\\slash \\N None ñ 😀"


def _awkward_file(file: bytes) -> bytes:
    """The export with values the COPY text must spell exactly as the staging path reads them."""

    def edit(document):
        pacientes = section(document, "clinica.paciente")
        names = pacientes["fields"]
        rows = pacientes["rows"]
        rows[0][names.index("direccion")] = AWKWARD_TEXT
        rows[0][names.index("telefono")] = True  # a JSON boolean in a text column: 'true', as `->>` reads it
        rows[0][names.index("alergias")] = {"texto": AWKWARD_TEXT, "n": [1, 2.5, None, False], "vacío": {}}
        rows[1][names.index("nombre")] = "None"
        rows[1][names.index("fecha_nacimiento")] = None
        rows[1][names.index("email")] = 12345  # a number in a text column
        rows[1][names.index("alergias")] = None  # JSON null in a non-null JSON field: jsonb 'null'
        rows[2][names.index("apellido")] = "\\"
        rows[2][names.index("activo")] = "false"  # text a boolean column reads
        tratamientos = section(document, "clinica.tratamiento")
        tratamientos["rows"][0][tratamientos["fields"].index("precio")] = "@@EXPONENT@@"
        tratamientos["rows"][1][tratamientos["fields"].index("duracion_minutos")] = "45"

    return file_edit(file, edit).replace(b'"@@EXPONENT@@"', b"1.5e2")


def _rows_updated() -> int:
    """Rows the clinic's tables saw updated in this (the test's) transaction."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(sum(n_tup_upd), 0) FROM pg_stat_xact_user_tables WHERE schemaname = %s",
                       [connection.schema_name])
        return cursor.fetchone()[0]


def test_replace_by_copy_stores_exactly_what_the_staging_path_stores(tenant_a, clinic_admin):
    # given a file with awkward values in every kind of column
    clinic_data_create(usuario=clinic_admin)
    file = _awkward_file(export_bytes())
    # when it is restored with replace=true (a model's first section goes by COPY into its emptied table)
    restore(file, replace=True)
    by_copy = restorable_snapshot()
    # and again without replace: every row through the staging table, each one's columns
    # written over the COPY's by INSERT … ON CONFLICT (pk) DO UPDATE
    updated_before = _rows_updated()
    restore(file, replace=False)
    assert _rows_updated() - updated_before >= sum(len(rows) for rows in by_copy.values())
    # then both stored the same values, row by row
    assert restorable_snapshot() == by_copy
    paciente = Paciente.objects.order_by("pk").first()
    assert paciente.direccion == AWKWARD_TEXT and paciente.telefono == "true"
    assert Tratamiento.objects.filter(precio=150).exists()


@pytest.mark.parametrize("row", [
    ["texto", 1, None],
    ["None", 2, "x"],
    [None, None, None],
    ["a\tb", 3, "c"],
    ["\\N", 4, "\\"],
    ["línea\nnueva\r", -5, ""],
])
def test_copy_rows_write_each_line_as_value_by_value_encoding_does(row):
    from django.db import models

    from backup_restore.copy_text import CopyRows, copy_encoder

    fields = [models.CharField(max_length=10, null=True), models.IntegerField(null=True), models.TextField(null=True)]
    expected = "\t".join(copy_encoder(f)(value) for f, value in zip(fields, row))
    assert CopyRows(fields).line(list(row)) == expected


@pytest.mark.parametrize(("rows", "at_once"), [
    ([[1, "a", None, True, Decimal("1.50")], [2, None, 3, False, None], [3, "Nonesuch", None, None, 7]], True),
    ([[1, "back\\slash \\N\r", None, None, None], [2, "", None, None, None]], True),
    ([[1, "None", None, True, 1]], False),  # reads like a null
    ([[1, "x\ty", 1, True, 1], [2, "b", 2, False, 2]], False),  # a tab inside a value
    ([[1, "línea\nnueva", 1, True, 1]], False),
    ([[1, "\x01", None, True, 1]], False),
    ([[1, True, 1, True, 1]], False),  # a boolean in a text column
    ([[1, "a", Decimal("2"), True, 1]], False),  # a decimal in an integer column
])
def test_copy_rows_write_a_batch_as_line_by_line(rows, at_once):
    from django.db import models

    from backup_restore.copy_text import CopyRows, NotCopyText

    fields = [models.IntegerField(primary_key=True), models.CharField(max_length=20, null=True),
              models.IntegerField(null=True), models.BooleanField(null=True),
              models.DecimalField(max_digits=5, decimal_places=2, null=True)]
    encoder = CopyRows(fields)
    text = encoder.batch_text([list(row) for row in rows])
    try:
        expected = "".join(encoder.line(list(row)) + "\n" for row in rows)
    except NotCopyText:
        expected = None
    assert (text is not None) == at_once
    assert text is None or text == expected


def test_a_key_repeated_in_a_later_copy_batch_is_refused_as_repeated(tenant_a, clinic_admin, monkeypatch):
    # given a file whose patients repeat a key, in batches of two rows
    from backup_restore import loader

    monkeypatch.setattr(loader, "IMPORT_LOAD_ROWS", 2)
    clinic_data_create(usuario=clinic_admin)

    def repeat(document):
        rows = section(document, "clinica.paciente")["rows"]
        rows.append(list(rows[0]))
        document["models"]["clinica.paciente"]["count"] += 1  # else refused as a row past the count

    file = file_edit(export_bytes(), repeat)
    before = restorable_snapshot()
    # when it is restored with replace=true
    with pytest.raises(errors.DuplicatePrimaryKeyError) as raised:
        restore(file, replace=True)
    # then it is refused naming the key, and nothing changed
    assert raised.value.details["model"] == "clinica.paciente"
    assert restorable_snapshot() == before


# -- replace: the primary keys dropped for the load (constraints.SuspendedConstraints.drop_primary_keys)

def _section_edit(label, edit):
    """A file edit of one model's section: edit(fields, rows), the header's count following."""
    def change(document):
        rows = section(document, label)
        edit(rows["fields"], rows["rows"])
        document["models"][label]["count"] = len(rows["rows"])
    return change


@pytest.mark.parametrize("replace", [True, False], ids=["replace", "merge"])
def test_a_restore_names_the_first_row_in_the_files_order_that_repeats_a_key(tenant_a, clinic_admin, replace):
    # given appointments (no other unique column) whose file repeats the last one's key, then the first's,
    # in one COPY batch
    clinic_data_create(usuario=clinic_admin)
    file = file_edit(export_bytes(), _section_edit("clinica.cita", lambda fields, rows: rows.extend([list(rows[-1]), list(rows[0])])))
    rows = section(json.loads(file), "clinica.cita")["rows"]
    repeated_first = rows[-2][0]
    assert repeated_first != rows[-1][0]
    before = schema_fingerprint("test_a")

    # when it is restored
    with pytest.raises(errors.DuplicatePrimaryKeyError) as raised:
        restore(file, replace=replace)

    # then the refusal names the key repeated first, and nothing changed
    assert raised.value.details == {"model": "clinica.cita", "pk": repeated_first,
                                    "reason": "La clave primaria aparece más de una vez."}
    assert schema_fingerprint("test_a") == before


def test_a_replace_names_the_first_row_that_repeats_a_unique_value_before_a_later_repeated_key(tenant_a, clinic_admin):
    # given invoices (two unique columns) whose file repeats an invoice number, then a key, in one COPY batch
    clinic_data_create(usuario=clinic_admin)

    def edit(fields, rows):
        number, uuid = list(rows[0]), list(rows[1])
        number[fields.index("id")], number[fields.index("uuid")] = 987653, "00000000-0000-4000-8000-000000000001"
        rows.extend([number, uuid])

    file = file_edit(export_bytes(), _section_edit("clinica.factura", edit))
    first = section(json.loads(file), "clinica.factura")["rows"][0]
    number = first[section(json.loads(file), "clinica.factura")["fields"].index("numero")]
    before = schema_fingerprint("test_a")

    # when it is restored with replace=true
    with pytest.raises(errors.RestoreError) as raised:
        restore(file, replace=True)

    # then the refusal names the row that repeats the number, its field and the value, and nothing changed
    assert raised.value.code == "unique_violation", raised.value.details
    assert raised.value.details == {"model": "clinica.factura", "pk": 987653, "field": "numero",
                                    "reason": f"(numero)=({number}) aparece más de una vez."}
    assert schema_fingerprint("test_a") == before


@pytest.mark.parametrize("later", ["a_short_row", "a_value_postgresql_refuses"])
def test_a_repeated_key_is_named_before_what_a_later_row_of_its_section_has_wrong(
        tenant_a, clinic_admin, monkeypatch, later):
    # given, in batches of two rows, an appointment repeating the first one's key and, later, a row refused on its own
    from backup_restore import loader

    monkeypatch.setattr(loader, "IMPORT_LOAD_ROWS", 2)
    clinic_data_create(usuario=clinic_admin)

    def edit(fields, rows):
        rows.append(list(rows[0]))
        rows.extend(list(row) for row in rows[:2])
        rows[-2][fields.index("id")], rows[-1][fields.index("id")] = 987653, 987654
        if later == "a_short_row":  # refused as it is read
            rows[-1] = rows[-1][:2]
        else:  # refused by its column's type: the batch goes through the staging table, which needs the key
            rows[-1][fields.index("inicio")] = "no-es-fecha"

    file = file_edit(export_bytes(), _section_edit("clinica.cita", edit))
    first_key = section(json.loads(file), "clinica.cita")["rows"][0][0]
    before = schema_fingerprint("test_a")

    # when it is restored with replace=true
    with pytest.raises(errors.RestoreError) as raised:
        restore(file, replace=True)

    # then the repeated key is the refusal, as it would be were the key checked row by row
    assert isinstance(raised.value, errors.DuplicatePrimaryKeyError), raised.value.details
    assert raised.value.details["pk"] == first_key
    assert schema_fingerprint("test_a") == before


def test_a_batch_through_the_staging_path_midway_finds_its_primary_key_back(tenant_a, clinic_admin, monkeypatch):
    # given, in batches of two rows, a patient in the third batch that COPY text cannot carry (a list in a text column)
    from backup_restore import loader

    monkeypatch.setattr(loader, "IMPORT_LOAD_ROWS", 2)
    clinic_data_create(usuario=clinic_admin)
    PacienteFactory.create_batch(6)
    file = file_edit(export_bytes(), _section_edit(
        "clinica.paciente", lambda fields, rows: rows[4].__setitem__(fields.index("direccion"), ["a", 1])))
    patient = section(json.loads(file), "clinica.paciente")["rows"][4][0]
    fingerprint = schema_fingerprint("test_a")

    # when it is restored with replace=true
    restore(file, replace=True)

    # then the row is stored as the staging path reads it, and the keys and indexes are as they were
    assert Paciente.objects.get(pk=patient).direccion == '["a", 1]'
    after = schema_fingerprint("test_a")
    assert [v for k, v in after.items() if not k.startswith("rows")] == [
        v for k, v in fingerprint.items() if not k.startswith("rows")]


def test_a_replace_without_a_models_rows_gives_its_table_its_primary_key_back(tenant_a, clinic_admin):
    # given a file that brings no radiographs, and one that lacks the model altogether
    clinic_data_create(usuario=clinic_admin)
    file = export_bytes()
    original = restorable_snapshot()
    fingerprint = schema_fingerprint("test_a")

    def emptied(document):
        section(document, "clinica.radiografia")["rows"] = []
        document["models"]["clinica.radiografia"]["count"] = 0

    # when each is restored with replace=true, then the original file
    restore(file_edit(file, emptied), replace=True)
    assert not Radiografia.objects.exists()
    restore(file, replace=True)

    # then every table is as it was, keys and indexes included
    assert restorable_snapshot() == original
    assert schema_fingerprint("test_a") == fingerprint


# -- a section longer than its header says (issue 18): refused at its first extra row, not at its end

@pytest.mark.parametrize(("label", "replace"), [
    ("clinica.pago", True),  # loaded by COPY straight into the emptied table
    ("clinica.pago", False),  # through the staging table
    ("bitacora.bitacora", True),  # not restored: the reader drains it
])
def test_a_section_past_its_declared_count_is_refused_at_its_first_extra_row(tenant_a, clinic_admin, label, replace):
    from backup_restore.guarded_stream import PARSE_BUFFER
    from backup_restore.tests.conftest import RowStream
    from core.testing import schema_fingerprint

    # given the clinic's export whose section of `label` goes on for 200,000 rows past the header's count
    clinic_data_create(usuario=clinic_admin)
    document = json.loads(export_bytes())
    declared = document["models"][label]["count"]
    s = section(document, label)
    width = len(s["fields"])
    template = s["rows"][0] if s["rows"] else [None] * width
    s["rows"] = "@@ROWS@@"
    before, after = json.dumps(document).encode().split(b'"@@ROWS@@"')

    def make_row(n: int) -> bytes:  # every row the same size: ids of nine digits
        return json.dumps([100_000_000 + n, *template[1:]]).encode()

    upload = RowStream(before + b"[", make_row, declared + 200_000, b"]" + after)
    fingerprint = schema_fingerprint("test_a")

    # when it is restored
    with pytest.raises(errors.CountMismatchError) as raised:
        utils.tenant_data_import(source=upload, schema_name="test_a", replace=replace)

    # then the first row past the count is refused, the file read no further than the parser's buffers,
    # and the clinic is byte-identical
    assert (raised.value.details["model"], raised.value.details["declared"], raised.value.details["read"]) == (
        label, declared, declared + 1)
    assert upload.made <= declared + 1 + 3 * PARSE_BUFFER // len(make_row(0))
    assert schema_fingerprint("test_a") == fingerprint


def test_a_batch_refused_by_postgresql_is_reported_before_a_later_row_refused_while_read(tenant_a, clinic_admin, monkeypatch):
    # given patients loaded a row per batch, the second repeating the first's document (PostgreSQL
    # refuses its COPY, in flight) and the fourth holding a NUL (refused as it is read, before that)
    from backup_restore import loader
    from core.testing import schema_fingerprint

    monkeypatch.setattr(loader, "IMPORT_LOAD_ROWS", 1)
    clinic_data_create(usuario=clinic_admin)
    PacienteFactory.create_batch(3)

    def edit(document):
        s = section(document, "clinica.paciente")
        documento, nombre = s["fields"].index("documento"), s["fields"].index("nombre")
        s["rows"][1][documento] = s["rows"][0][documento]
        s["rows"][3][nombre] = "Ana\x00María"

    file = file_edit(export_bytes(), edit)
    before = schema_fingerprint("test_a")

    # when it is restored with replace=true
    with pytest.raises(errors.RestoreError) as raised:
        restore(file, replace=True)

    # then the first refused row of the file is the one reported, and nothing changed
    assert raised.value.code == "unique_violation", raised.value.details
    assert raised.value.details["model"] == "clinica.paciente"
    assert schema_fingerprint("test_a") == before


def test_a_restore_in_the_exports_own_layout_stores_exactly_what_the_staging_path_stores(tenant_a, clinic_admin):
    # given the clinic's export as written (a row a line: the reader parses a block of rows at a time)
    clinic_data_create(usuario=clinic_admin)
    PacienteFactory.create_batch(300)
    file = export_bytes()
    assert b"],\n[" in file

    # when it is restored with replace=true, then without
    restore(file, replace=True)
    by_copy = restorable_snapshot()
    restore(file, replace=False)

    # then both store the same rows
    assert restorable_snapshot() == by_copy


def test_a_tables_end_the_loading_thread_could_not_finish_is_done_again_and_the_schema_is_whole(
        tenant_a, clinic_admin, monkeypatch):
    # given the loading thread finishing no table's end (as when a key check or a key fails there)
    from backup_restore import loader
    from core.testing import schema_fingerprint

    monkeypatch.setattr(loader, "finish_load",
                        lambda raw, table, schema, primary_key, updates, checks, indexes, keys: (indexes, keys))
    clinic_data_create(usuario=clinic_admin)
    PacienteFactory.create_batch(20)
    original, fingerprint = restorable_snapshot(), schema_fingerprint("test_a")
    file = export_bytes()

    # when the clinic's export is restored with replace=true
    restore(file, replace=True)

    # then each table's end ran on the restore's own thread: every row, index and key is back as it was
    assert restorable_snapshot() == original
    assert schema_fingerprint("test_a") == fingerprint
