"""The confinement rule of patient file names: a table of names and what the rule says."""
import pytest

from core.media_names import NameRefused, media_name_is_confined, media_name_refusal


@pytest.mark.no_test_db
@pytest.mark.parametrize(
    ("name", "refusal"),
    [
        ("clinica_demo/radiografias/rx.png", None),
        ("clinica_demo/radiografias/sub/rx 1 (copia).png", None),
        ("clinica_demo/radiografias/niño-ñandú.png", None),
        ("", None),
        ("clinica_norte/radiografias/rx.png", NameRefused.OUTSIDE_CLINIC),
        ("clinica_demo", NameRefused.OUTSIDE_CLINIC),
        ("clinica_demox/radiografias/rx.png", NameRefused.OUTSIDE_CLINIC),
        ("radiografias/rx.png", NameRefused.OUTSIDE_CLINIC),
        ("clinica_demo/radiografias/../../clinica_norte/radiografias/rx.png", NameRefused.TRAVERSAL),
        ("clinica_demo/../clinica_norte/rx.png", NameRefused.TRAVERSAL),
        ("clinica_demo/./rx.png", NameRefused.TRAVERSAL),
        ("clinica_demo//rx.png", NameRefused.TRAVERSAL),
        ("clinica_demo/radiografias/", NameRefused.TRAVERSAL),
        ("../../../etc/passwd", NameRefused.TRAVERSAL),
        ("/var/media/clinica_demo/radiografias/rx.png", NameRefused.ABSOLUTE),
        ("C:/clinica_demo/rx.png", NameRefused.ABSOLUTE),
        ("clinica_demo\\..\\clinica_norte\\rx.png", NameRefused.BACKSLASH),
        ("clinica_demo/radiografias/rx\x00.png", NameRefused.CONTROL_CHARACTER),
        ("clinica_demo/radiografias/rx\n.png", NameRefused.CONTROL_CHARACTER),
        ("clinica_demo/radiografias/rx\x1b[31m.png", NameRefused.CONTROL_CHARACTER),
        ("clinica_demo/radiografias/\ud800.png", NameRefused.CONTROL_CHARACTER),
        ("clinica_demo/radiografias/rx\u2028.png", NameRefused.CONTROL_CHARACTER),
        ("clinica_demo/radiografias/rx\u2029.png", NameRefused.CONTROL_CHARACTER),
        ("clinica_demo/radiografias/" + "a" * 100, NameRefused.TOO_LONG),
        (["clinica_demo/rx.png"], NameRefused.NOT_TEXT),
        (None, NameRefused.NOT_TEXT),
    ],
)
def test_a_name_is_allowed_only_under_its_clinics_prefix(name, refusal):
    assert media_name_refusal("clinica_demo", name) == refusal


@pytest.mark.no_test_db
def test_the_length_limit_is_the_columns():
    name = "clinica_demo/radiografias/" + "a" * 150
    assert media_name_refusal("clinica_demo", name, max_length=200) is None
    assert media_name_refusal("clinica_demo", name, max_length=100) == NameRefused.TOO_LONG


@pytest.mark.no_test_db
def test_the_empty_name_is_no_file_not_a_confined_one():
    assert not media_name_is_confined("clinica_demo", "")
    assert media_name_is_confined("clinica_demo", "clinica_demo/radiografias/rx.png")
