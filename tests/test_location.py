"""Location extraction: the gazetteer, the matching rules and the text-over-profile rule."""

from __future__ import annotations

import pytest

from stream_app.clean.location import REGION_CODES, Location, extract_location

BORDEAUX = Location(city="Bordeaux", region_code="FR-NAQ", department="33")
SAINT_ETIENNE = Location(city="Saint-Étienne", region_code="FR-ARA", department="42")
NICE = Location(city="Nice", region_code="FR-PAC", department="06")


def test_city_in_the_text() -> None:
    assert extract_location("Panne fibre à Bordeaux depuis ce matin, on fait comment ?") \
        == BORDEAUX


def test_city_from_the_profile_only() -> None:
    assert extract_location("Toujours pas de réseau, merci Free...", "Bordeaux, France") \
        == BORDEAUX


def test_text_wins_over_profile() -> None:
    found = extract_location("En vacances à Lyon et la 4G ne passe pas", "Bordeaux")
    assert found == Location(city="Lyon", region_code="FR-ARA", department="69")


def test_profile_used_when_text_names_no_place() -> None:
    assert extract_location("plus d'internet", "Paris 11e") \
        == Location(city="Paris", region_code="FR-IDF", department="75")


@pytest.mark.parametrize("text", [
    "coupure BORDEAUX centre", "coupure bordeaux centre", "Coupure Bordeaux centre",
])
def test_case_insensitive(text: str) -> None:
    assert extract_location(text) == BORDEAUX


@pytest.mark.parametrize("text", [
    "Saint-Étienne sans fibre", "st etienne sans fibre", "ST-ETIENNE sans fibre",
    "St. Étienne sans fibre", "saint etienne sans fibre", "#SaintEtienne sans fibre",
])
def test_saint_and_accents_and_hyphens(text: str) -> None:
    assert extract_location(text) == SAINT_ETIENNE


def test_decomposed_accents() -> None:
    assert extract_location("Saint-E\u0301tienne sans fibre") == SAINT_ETIENNE
    assert extract_location("", "Ni\u0302mes").city == "Nîmes"


def test_accents_optional_in_other_names() -> None:
    assert extract_location("réseau HS à Orleans").city == "Orléans"
    assert extract_location("réseau HS à NÎMES").city == "Nîmes"
    assert extract_location("fibre coupée à Villeneuve d'Ascq").department == "59"


@pytest.mark.parametrize("text", ["#Bordeaux panne", "Encore une panne #bordeaux",
                                  "#panneBordeaux ce soir"])
def test_hashtags(text: str) -> None:
    assert extract_location(text) == BORDEAUX


def test_whole_words_only() -> None:
    assert extract_location("Les Bordelais n'ont plus de réseau") is None
    assert extract_location("Parisien exilé, fibre au top") is None
    assert extract_location("je parisais sur une panne") is None


def test_region_names() -> None:
    assert extract_location("Grosse panne en Bretagne ce matin") \
        == Location(city="", region_code="FR-BRE", department="")
    assert extract_location("outage all over Brittany").region_code == "FR-BRE"
    assert extract_location("la 5G arrive en Île-de-France").region_code == "FR-IDF"
    assert extract_location("fibre en PACA").region_code == "FR-PAC"


def test_a_city_beats_a_region_in_the_same_text() -> None:
    assert extract_location("Panne en Bretagne, ici à Rennes plus rien").city == "Rennes"


@pytest.mark.parametrize("text", [
    "the service is nice", "Nice job Free, fibre installed in a day",
    "have a nice day", "HAVE A NICE DAY", "nice, the 5G finally works",
])
def test_nice_as_an_english_word_is_not_a_place(text: str) -> None:
    assert extract_location(text) is None


@pytest.mark.parametrize("text", [
    "panne à Nice", "panne a Nice", "PANNE À NICE", "plus de réseau sur nice",
    "outage in Nice", "la fibre Nice nord est coupée", "#Nice coupure",
])
def test_nice_as_a_place(text: str) -> None:
    assert extract_location(text) == NICE


def test_nice_in_the_profile_is_a_place() -> None:
    assert extract_location("the service is nice", "nice") == NICE


def test_other_ambiguous_names() -> None:
    assert extract_location("ça fait des tours de manège") is None
    assert extract_location("réseau HS sur Tours").city == "Tours"
    assert extract_location("it angers me that the box reboots") is None
    assert extract_location("j'habite à Angers, fibre coupée").city == "Angers"
    assert extract_location("en attendant qu'un technicien vienne") is None


def test_orange_the_operator_is_not_the_city() -> None:
    assert extract_location("Je passe chez Orange, ras le bol") is None
    assert extract_location("Orange a un meilleur réseau dans le coin") is None
    assert extract_location("ça n'a aucun sens, la box de Sens... non je rigole") is None
    assert extract_location("panne à Orange depuis hier").city == "Orange"
    assert extract_location("près de Sens, plus de 4G").city == "Sens"


@pytest.mark.parametrize("text", ["Paris 15e sans internet", "Paris 15 sans internet",
                                  "Paris15 sans internet", "paris 15ème"])
def test_paris_arrondissements(text: str) -> None:
    assert extract_location(text).city == "Paris"


def test_suburbs_keep_their_name_with_the_metropole_codes() -> None:
    assert extract_location("coupure à Mérignac") \
        == Location(city="Mérignac", region_code="FR-NAQ", department="33")
    assert extract_location("Villeurbanne sans fibre").department == "69"


def test_corsica_departments() -> None:
    assert extract_location("Panne 4G à Ajaccio") \
        == Location(city="Ajaccio", region_code="FR-COR", department="2A")


@pytest.mark.parametrize("text, profile", [
    ("", ""), ("plus d'internet depuis ce matin", ""), ("no signal at all", "Earth"),
    ("rien", "France"), ("🙂🙂", ""),
])
def test_none_when_nothing_found(text: str, profile: str) -> None:
    assert extract_location(text, profile) is None


def test_only_known_region_codes() -> None:
    texts = ["Paris", "Marseille", "Lyon", "Bretagne", "Corse", "Lille", "Strasbourg",
             "Dijon", "Rouen", "Tours", "Toulouse", "Nantes", "Bordeaux"]
    for text in texts:
        assert extract_location(text, text).region_code in REGION_CODES
