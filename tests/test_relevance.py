import pytest

from stream_app.clean.relevance import load_brand, parse_brand
from stream_app.settings import SettingsError, load_settings


def test_builtin_brands_load():
    free = load_brand(load_settings(environ={}))
    assert free.relevance("chez Free depuis 10 ans", "x") == "customer"
    assert free.relevance("ma Freebox Pop redémarre", "x") == "customer"
    assert free.relevance("@FREE_1337 aidez-moi", "x") == "customer"
    assert free.relevance("réponse de l'équipe", "Free_1337") == "brand_own"
    assert free.relevance("il pleut à Brest", "x") == "off_topic"
    assert free.relevance("freeboxeur", "x") == "off_topic"  # whole words only
    assert free.relevance("toujours rien depuis hier", "x", in_reply_to="Freebox") == "customer"


def test_brand_file_overrides_and_is_validated(tmp_path):
    path = tmp_path / "acme.yaml"
    path.write_text("name: acme\naccounts: [AcmeCare]\nkeywords: [acme]\nown_posts: drop\n")
    acme = load_brand(load_settings(environ={"DALLOSH_BRAND_FILE": str(path)}))
    assert acme.name == "acme" and acme.policy("brand_own") == "drop"
    assert acme.relevance("Acme is down", "x") == "customer"


@pytest.mark.parametrize("text, message", [
    ("accounts: [a]\n", "missing key 'name'"),
    ("name: x\nown_posts: maybe\naccounts: [a]\n", "own_posts must be one of"),
    ("name: x\n", "at least one account or keyword"),
    ("name: [unclosed\n", "not valid YAML"),
])
def test_bad_brand_files_are_clear_errors(text, message):
    with pytest.raises(SettingsError, match=message):
        parse_brand(text, "DALLOSH_BRAND_FILE=x.yaml")


def test_unknown_builtin_brand_is_a_clear_error():
    with pytest.raises(SettingsError, match="no such built-in brand"):
        load_brand(load_settings(environ={"DALLOSH_BRAND": "nope"}))
