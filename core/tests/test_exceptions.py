"""What error bodies echo and audit entries keep of `details` is bounded."""
import json

import pytest

from core.exceptions import DETAILS_MAX_JSON, DETAILS_MAX_STRING, details_bounded

LONG = "x" * (DETAILS_MAX_STRING + 10)
CUT = f"{'x' * DETAILS_MAX_STRING}…[+10]"


@pytest.mark.parametrize(
    ("details", "kept"),
    [
        ({"model": "clinica.cita"}, {"model": "clinica.cita"}),
        ({"model": LONG}, {"model": CUT, "truncated": True}),
        ({LONG: 1}, {CUT: 1, "truncated": True}),
        ({"row": {"fields": [LONG, 2]}}, {"row": {"fields": [CUT, 2]}, "truncated": True}),
        ({"rows": list(range(205))}, {"rows": [*range(200), "…[+5]"], "truncated": True}),
        ({"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}, {"a": {"b": {"c": {"d": {"e": {"f": "…"}}}}}, "truncated": True}),
        ({"bytes": b"abc", "n": None, "ok": True}, {"bytes": "abc", "n": None, "ok": True}),
        (None, {}),
    ],
)
def test_long_strings_lists_and_nesting_are_cut_and_marked(details, kept):
    assert details_bounded(details) == kept


def test_details_too_big_in_sum_keep_only_a_preview_of_their_json():
    # given many strings each under the limit, together far over the bound
    details = {f"campo_{n}": "y" * DETAILS_MAX_STRING for n in range(150)}
    # when bounded
    kept = details_bounded(details)
    # then what is kept is the start of the JSON text, marked
    assert kept["truncated"] is True and set(kept) == {"truncated", "preview"}
    assert kept["preview"].startswith('{"campo_0": "yyy')
    assert len(json.dumps(kept, ensure_ascii=False)) <= DETAILS_MAX_JSON


def test_a_validation_error_echoing_a_huge_value_is_bounded(client_for):
    # given a field whose error message repeats the value it refused (DRF's ChoiceField)
    response = client_for("test_a", "admin").post(
        "/api/backups/create/", {"backup_type": "z" * 100_000}, content_type="application/json"
    )
    # then the 400 keeps only an excerpt of it
    assert response.status_code == 400
    assert response.json()["details"]["truncated"] is True
    assert len(response.content) < 2048
