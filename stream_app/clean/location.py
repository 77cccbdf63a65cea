"""Where a tweet is about: a French city or region found in the text or the profile.

``extract_location(text, profile_location)`` looks for the places of a built-in
gazetteer (:data:`_CITIES`: the ~80 largest cities of metropolitan France, ~45 common
suburbs and a few ambiguous smaller towns; :data:`_REGIONS`: the 13 metropolitan
regions with their usual, English and former names) and returns a :class:`Location`,
or ``None``.

Rules, in the order they apply:

* **Matching** is case- and accent-insensitive and on whole words: ``"BORDEAUX"``,
  ``"bordeaux"`` and ``"#Bordeaux"`` match, ``"Bordelais"`` does not. A name may be
  followed by digits (``"Paris 15e"``, ``"Paris15"`` and ``"Lyon 3"`` are Paris and
  Lyon). The parts of a compound name may be joined by spaces, hyphens, apostrophes,
  dots or nothing, and ``Saint`` may be written ``St``: ``"Saint-Étienne"``,
  ``"st etienne"``, ``"St.Etienne"`` and ``"#SaintEtienne"`` are all Saint-Étienne.
  A camel-case hashtag is also read word by word (``"#panneBordeaux"``).
* **Ambiguous names** that are also common English or French words need a cue in the
  tweet text (the profile location is a place field, so there they always match):

  - ``word`` names (Nice, Tours, Angers, Vienne, Lens, Grasse, Vannes, Pantin,
    Colombes, and the regions Corse and Lorraine) match when the word before them is a
    locative cue (``à a au en sur de du d près vers depuis near in at from
    around``; not ``a`` before Nice or Lens, which reads "a nice day") or when they
    are written Title-case somewhere other than at the start of a sentence
    (``"ça rame à Nice"``, ``"le réseau de Tours"``, ``"panne fibre Nice centre"``).
    ``"nice service"``, ``"Nice job Free"`` and ``"faire des tours"`` do not match.
  - ``strict`` names (Orange, Sens) are also an operator and a common French noun
    ("je passe chez Orange", "ça n'a pas de sens"), so only ``à``/``near`` or
    ``près de`` before them count, and capitals do not.
* **Suburbs** keep their own name as the city (``"Mérignac"`` is Mérignac, not
  Bordeaux) with the department and region they share with their metropole, so region
  dashboards aggregate them correctly and city dashboards do not mislabel them.
* **Regions** (``"Bretagne"``, ``"Brittany"``, ``"IDF"``, ``"PACA"``, ``"Alsace"``)
  give ``Location(city="", region_code=..., department="")``.
* **Priority**: the tweet text wins over the profile location (the tweet says where the
  problem is). Inside one string the first city wins; a region is used only when no
  city is named (``"panne en Bretagne, à Rennes"`` is Rennes).
* Only metropolitan France is covered: ``"Saint-Denis"`` is the one in Seine-Saint-Denis
  (93), not La Réunion. Known limit: a first name that is also a place ("Nancy",
  "Lorraine" written mid-sentence) still reads as the place.

The whole gazetteer is compiled into one trie-shaped regular expression at import, so a
short tweet costs a few microseconds. :data:`COORDINATES` places each of its cities on
the wall's map.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["Location", "extract_location", "REGION_CODES", "COORDINATES"]


@dataclass(frozen=True, slots=True)
class Location:
    city: str  # canonical name, e.g. "Bordeaux"; "" when only a region is known
    region_code: str  # ISO 3166-2:FR region code, e.g. "FR-NAQ"
    department: str  # e.g. "33", "2A"; "" for a region


REGION_CODES = ("FR-ARA", "FR-BFC", "FR-BRE", "FR-CVL", "FR-COR", "FR-GES", "FR-HDF",
                "FR-IDF", "FR-NOR", "FR-NAQ", "FR-OCC", "FR-PDL", "FR-PAC")

# Ambiguity classes (see the module docstring).
_PLAIN, _WORD, _STRICT = 0, 1, 2

# (canonical name, department, region, ambiguity, extra spellings)
_CITIES: tuple[tuple[str, str, str, int, tuple[str, ...]], ...] = (
    # The largest cities of metropolitan France.
    ("Paris", "75", "FR-IDF", _PLAIN, ("Paname",)),
    ("Marseille", "13", "FR-PAC", _PLAIN, ("Marseilles",)),
    ("Lyon", "69", "FR-ARA", _PLAIN, ("Lyons",)),
    ("Toulouse", "31", "FR-OCC", _PLAIN, ()),
    ("Nice", "06", "FR-PAC", _WORD, ()),
    ("Nantes", "44", "FR-PDL", _PLAIN, ()),
    ("Montpellier", "34", "FR-OCC", _PLAIN, ()),
    ("Strasbourg", "67", "FR-GES", _PLAIN, ()),
    ("Bordeaux", "33", "FR-NAQ", _PLAIN, ()),
    ("Lille", "59", "FR-HDF", _PLAIN, ()),
    ("Rennes", "35", "FR-BRE", _PLAIN, ()),
    ("Toulon", "83", "FR-PAC", _PLAIN, ()),
    ("Reims", "51", "FR-GES", _PLAIN, ()),
    ("Saint-Étienne", "42", "FR-ARA", _PLAIN, ()),
    ("Le Havre", "76", "FR-NOR", _PLAIN, ()),
    ("Dijon", "21", "FR-BFC", _PLAIN, ()),
    ("Grenoble", "38", "FR-ARA", _PLAIN, ()),
    ("Angers", "49", "FR-PDL", _WORD, ()),
    ("Nîmes", "30", "FR-OCC", _PLAIN, ()),
    ("Aix-en-Provence", "13", "FR-PAC", _PLAIN, ()),
    ("Clermont-Ferrand", "63", "FR-ARA", _PLAIN, ("Clermont",)),
    ("Le Mans", "72", "FR-PDL", _PLAIN, ()),
    ("Brest", "29", "FR-BRE", _PLAIN, ()),
    ("Tours", "37", "FR-CVL", _WORD, ()),
    ("Amiens", "80", "FR-HDF", _PLAIN, ()),
    ("Annecy", "74", "FR-ARA", _PLAIN, ()),
    ("Limoges", "87", "FR-NAQ", _PLAIN, ()),
    ("Metz", "57", "FR-GES", _PLAIN, ()),
    ("Perpignan", "66", "FR-OCC", _PLAIN, ()),
    ("Besançon", "25", "FR-BFC", _PLAIN, ()),
    ("Orléans", "45", "FR-CVL", _PLAIN, ()),
    ("Rouen", "76", "FR-NOR", _PLAIN, ()),
    ("Mulhouse", "68", "FR-GES", _PLAIN, ()),
    ("Caen", "14", "FR-NOR", _PLAIN, ()),
    ("Nancy", "54", "FR-GES", _PLAIN, ()),
    ("Avignon", "84", "FR-PAC", _PLAIN, ()),
    ("Poitiers", "86", "FR-NAQ", _PLAIN, ()),
    ("Dunkerque", "59", "FR-HDF", _PLAIN, ("Dunkirk",)),
    ("Béziers", "34", "FR-OCC", _PLAIN, ()),
    ("La Rochelle", "17", "FR-NAQ", _PLAIN, ()),
    ("Pau", "64", "FR-NAQ", _PLAIN, ()),
    ("Cannes", "06", "FR-PAC", _PLAIN, ()),
    ("Antibes", "06", "FR-PAC", _PLAIN, ()),
    ("Ajaccio", "2A", "FR-COR", _PLAIN, ()),
    ("Bastia", "2B", "FR-COR", _PLAIN, ()),
    ("Calais", "62", "FR-HDF", _PLAIN, ()),
    ("Saint-Nazaire", "44", "FR-PDL", _PLAIN, ()),
    ("Colmar", "68", "FR-GES", _PLAIN, ()),
    ("Valence", "26", "FR-ARA", _PLAIN, ()),
    ("Bourges", "18", "FR-CVL", _PLAIN, ()),
    ("Quimper", "29", "FR-BRE", _PLAIN, ()),
    ("Troyes", "10", "FR-GES", _PLAIN, ()),
    ("Montauban", "82", "FR-OCC", _PLAIN, ()),
    ("Niort", "79", "FR-NAQ", _PLAIN, ()),
    ("Chambéry", "73", "FR-ARA", _PLAIN, ()),
    ("Lorient", "56", "FR-BRE", _PLAIN, ()),
    ("Vannes", "56", "FR-BRE", _WORD, ()),
    ("Saint-Malo", "35", "FR-BRE", _PLAIN, ()),
    ("Saint-Brieuc", "22", "FR-BRE", _PLAIN, ()),
    ("Beauvais", "60", "FR-HDF", _PLAIN, ()),
    ("Narbonne", "11", "FR-OCC", _PLAIN, ()),
    ("Carcassonne", "11", "FR-OCC", _PLAIN, ()),
    ("Laval", "53", "FR-PDL", _PLAIN, ()),
    ("Cholet", "49", "FR-PDL", _PLAIN, ()),
    ("Blois", "41", "FR-CVL", _PLAIN, ()),
    ("Chartres", "28", "FR-CVL", _PLAIN, ()),
    ("Angoulême", "16", "FR-NAQ", _PLAIN, ()),
    ("Bayonne", "64", "FR-NAQ", _PLAIN, ()),
    ("Albi", "81", "FR-OCC", _PLAIN, ()),
    ("Tarbes", "65", "FR-OCC", _PLAIN, ()),
    ("Évreux", "27", "FR-NOR", _PLAIN, ()),
    ("Cherbourg", "50", "FR-NOR", _PLAIN, ()),
    ("Saint-Quentin", "02", "FR-HDF", _PLAIN, ()),
    ("Belfort", "90", "FR-BFC", _PLAIN, ()),
    ("Auxerre", "89", "FR-BFC", _PLAIN, ()),
    ("Chalon-sur-Saône", "71", "FR-BFC", _PLAIN, ()),
    ("Arles", "13", "FR-PAC", _PLAIN, ()),
    ("Fréjus", "83", "FR-PAC", _PLAIN, ()),
    ("Hyères", "83", "FR-PAC", _PLAIN, ()),
    # Smaller towns whose names are also ordinary words (see the docstring).
    ("Vienne", "38", "FR-ARA", _WORD, ()),
    ("Lens", "62", "FR-HDF", _WORD, ()),
    ("Grasse", "06", "FR-PAC", _WORD, ()),
    ("Orange", "84", "FR-PAC", _STRICT, ()),
    ("Sens", "89", "FR-BFC", _STRICT, ()),
    # Suburbs: own name, metropole's department and region.
    ("Boulogne-Billancourt", "92", "FR-IDF", _PLAIN, ()),
    ("Nanterre", "92", "FR-IDF", _PLAIN, ()),
    ("Courbevoie", "92", "FR-IDF", _PLAIN, ()),
    ("Colombes", "92", "FR-IDF", _WORD, ()),
    ("Asnières-sur-Seine", "92", "FR-IDF", _PLAIN, ("Asnières",)),
    ("Rueil-Malmaison", "92", "FR-IDF", _PLAIN, ()),
    ("Issy-les-Moulineaux", "92", "FR-IDF", _PLAIN, ()),
    ("Levallois-Perret", "92", "FR-IDF", _PLAIN, ("Levallois",)),
    ("Neuilly-sur-Seine", "92", "FR-IDF", _PLAIN, ()),
    ("Saint-Denis", "93", "FR-IDF", _PLAIN, ()),
    ("Montreuil", "93", "FR-IDF", _PLAIN, ()),
    ("Aubervilliers", "93", "FR-IDF", _PLAIN, ()),
    ("Aulnay-sous-Bois", "93", "FR-IDF", _PLAIN, ()),
    ("Drancy", "93", "FR-IDF", _PLAIN, ()),
    ("Noisy-le-Grand", "93", "FR-IDF", _PLAIN, ()),
    ("Pantin", "93", "FR-IDF", _WORD, ()),
    ("Bobigny", "93", "FR-IDF", _PLAIN, ()),
    ("Créteil", "94", "FR-IDF", _PLAIN, ()),
    ("Vitry-sur-Seine", "94", "FR-IDF", _PLAIN, ()),
    ("Champigny-sur-Marne", "94", "FR-IDF", _PLAIN, ()),
    ("Saint-Maur-des-Fossés", "94", "FR-IDF", _PLAIN, ()),
    ("Ivry-sur-Seine", "94", "FR-IDF", _PLAIN, ()),
    ("Villejuif", "94", "FR-IDF", _PLAIN, ()),
    ("Argenteuil", "95", "FR-IDF", _PLAIN, ()),
    ("Cergy", "95", "FR-IDF", _PLAIN, ()),
    ("Sarcelles", "95", "FR-IDF", _PLAIN, ()),
    ("Versailles", "78", "FR-IDF", _PLAIN, ()),
    ("Meaux", "77", "FR-IDF", _PLAIN, ()),
    ("Évry", "91", "FR-IDF", _PLAIN, ()),
    ("Villeurbanne", "69", "FR-ARA", _PLAIN, ()),
    ("Vénissieux", "69", "FR-ARA", _PLAIN, ()),
    ("Vaulx-en-Velin", "69", "FR-ARA", _PLAIN, ()),
    ("Bron", "69", "FR-ARA", _PLAIN, ()),
    ("Caluire-et-Cuire", "69", "FR-ARA", _PLAIN, ("Caluire",)),
    ("Mérignac", "33", "FR-NAQ", _PLAIN, ()),
    ("Pessac", "33", "FR-NAQ", _PLAIN, ()),
    ("Talence", "33", "FR-NAQ", _PLAIN, ()),
    ("Bègles", "33", "FR-NAQ", _PLAIN, ()),
    ("Roubaix", "59", "FR-HDF", _PLAIN, ()),
    ("Tourcoing", "59", "FR-HDF", _PLAIN, ()),
    ("Villeneuve-d'Ascq", "59", "FR-HDF", _PLAIN, ()),
    ("Blagnac", "31", "FR-OCC", _PLAIN, ()),
    ("Colomiers", "31", "FR-OCC", _PLAIN, ()),
    ("Saint-Herblain", "44", "FR-PDL", _PLAIN, ()),
    ("Rezé", "44", "FR-PDL", _PLAIN, ()),
    ("Cesson-Sévigné", "35", "FR-BRE", _PLAIN, ()),
    ("Illkirch-Graffenstaden", "67", "FR-GES", _PLAIN, ("Illkirch",)),
    ("Aubagne", "13", "FR-PAC", _PLAIN, ()),
    ("Martigues", "13", "FR-PAC", _PLAIN, ()),
    ("La Seyne-sur-Mer", "83", "FR-PAC", _PLAIN, ()),
)

# Where each city of the gazetteer is (latitude, longitude in decimal degrees, WGS 84,
# the town centre to about 1 km): the wall's map (stream_app.dashboards.queries.MAP)
# places a location's volume and incident status there. Every _CITIES entry has one
# (tests/test_dashboards_generated.py).
COORDINATES: dict[str, tuple[float, float]] = {
    "Paris": (48.857, 2.352), "Marseille": (43.296, 5.370), "Lyon": (45.764, 4.836),
    "Toulouse": (43.605, 1.444), "Nice": (43.710, 7.262), "Nantes": (47.218, -1.554),
    "Montpellier": (43.611, 3.877), "Strasbourg": (48.573, 7.752), "Bordeaux": (44.838, -0.579),
    "Lille": (50.629, 3.057), "Rennes": (48.117, -1.678), "Toulon": (43.124, 5.928),
    "Reims": (49.258, 4.032), "Saint-Étienne": (45.440, 4.387), "Le Havre": (49.494, 0.108),
    "Dijon": (47.322, 5.041), "Grenoble": (45.188, 5.724), "Angers": (47.478, -0.563),
    "Nîmes": (43.837, 4.360), "Aix-en-Provence": (43.530, 5.447),
    "Clermont-Ferrand": (45.778, 3.087), "Le Mans": (48.006, 0.199), "Brest": (48.390, -4.486),
    "Tours": (47.394, 0.685), "Amiens": (49.894, 2.296), "Annecy": (45.899, 6.129),
    "Limoges": (45.834, 1.261), "Metz": (49.120, 6.176), "Perpignan": (42.699, 2.895),
    "Besançon": (47.238, 6.024), "Orléans": (47.903, 1.909), "Rouen": (49.443, 1.099),
    "Mulhouse": (47.750, 7.336), "Caen": (49.183, -0.371), "Nancy": (48.692, 6.184),
    "Avignon": (43.949, 4.806), "Poitiers": (46.580, 0.340), "Dunkerque": (51.034, 2.377),
    "Béziers": (43.344, 3.216), "La Rochelle": (46.160, -1.151), "Pau": (43.295, -0.371),
    "Cannes": (43.552, 7.017), "Antibes": (43.580, 7.125), "Ajaccio": (41.919, 8.738),
    "Bastia": (42.697, 9.451), "Calais": (50.951, 1.858), "Saint-Nazaire": (47.273, -2.214),
    "Colmar": (48.079, 7.358), "Valence": (44.933, 4.892), "Bourges": (47.081, 2.399),
    "Quimper": (47.996, -4.097), "Troyes": (48.297, 4.074), "Montauban": (44.018, 1.355),
    "Niort": (46.323, -0.465), "Chambéry": (45.564, 5.918), "Lorient": (47.748, -3.370),
    "Vannes": (47.658, -2.760), "Saint-Malo": (48.649, -2.026), "Saint-Brieuc": (48.514, -2.765),
    "Beauvais": (49.430, 2.081), "Narbonne": (43.184, 3.004), "Carcassonne": (43.213, 2.349),
    "Laval": (48.073, -0.770), "Cholet": (47.060, -0.879), "Blois": (47.586, 1.335),
    "Chartres": (48.446, 1.489), "Angoulême": (45.648, 0.156), "Bayonne": (43.493, -1.475),
    "Albi": (43.929, 2.148), "Tarbes": (43.233, 0.078), "Évreux": (49.027, 1.151),
    "Cherbourg": (49.640, -1.616), "Saint-Quentin": (49.847, 3.287), "Belfort": (47.640, 6.863),
    "Auxerre": (47.798, 3.567), "Chalon-sur-Saône": (46.781, 4.854), "Arles": (43.677, 4.631),
    "Fréjus": (43.433, 6.737), "Hyères": (43.120, 6.130),
    "Vienne": (45.525, 4.874), "Lens": (50.432, 2.833), "Grasse": (43.658, 6.923),
    "Orange": (44.138, 4.808), "Sens": (48.197, 3.283),
    "Boulogne-Billancourt": (48.836, 2.240), "Nanterre": (48.892, 2.207),
    "Courbevoie": (48.897, 2.253), "Colombes": (48.923, 2.252),
    "Asnières-sur-Seine": (48.914, 2.287), "Rueil-Malmaison": (48.877, 2.190),
    "Issy-les-Moulineaux": (48.824, 2.270), "Levallois-Perret": (48.895, 2.287),
    "Neuilly-sur-Seine": (48.885, 2.269), "Saint-Denis": (48.936, 2.357),
    "Montreuil": (48.861, 2.443), "Aubervilliers": (48.914, 2.382),
    "Aulnay-sous-Bois": (48.938, 2.497), "Drancy": (48.923, 2.445),
    "Noisy-le-Grand": (48.848, 2.553), "Pantin": (48.894, 2.409), "Bobigny": (48.909, 2.439),
    "Créteil": (48.790, 2.455), "Vitry-sur-Seine": (48.787, 2.392),
    "Champigny-sur-Marne": (48.817, 2.516), "Saint-Maur-des-Fossés": (48.799, 2.499),
    "Ivry-sur-Seine": (48.813, 2.385), "Villejuif": (48.792, 2.364),
    "Argenteuil": (48.947, 2.248), "Cergy": (49.036, 2.076), "Sarcelles": (48.997, 2.381),
    "Versailles": (48.805, 2.130), "Meaux": (48.960, 2.879), "Évry": (48.632, 2.441),
    "Villeurbanne": (45.767, 4.880), "Vénissieux": (45.697, 4.886),
    "Vaulx-en-Velin": (45.778, 4.921), "Bron": (45.739, 4.913),
    "Caluire-et-Cuire": (45.795, 4.847), "Mérignac": (44.843, -0.646),
    "Pessac": (44.806, -0.631), "Talence": (44.808, -0.589), "Bègles": (44.808, -0.548),
    "Roubaix": (50.690, 3.181), "Tourcoing": (50.724, 3.161),
    "Villeneuve-d'Ascq": (50.623, 3.145), "Blagnac": (43.636, 1.390),
    "Colomiers": (43.611, 1.335), "Saint-Herblain": (47.212, -1.650), "Rezé": (47.184, -1.550),
    "Cesson-Sévigné": (48.121, -1.603), "Illkirch-Graffenstaden": (48.530, 7.715),
    "Aubagne": (43.292, 5.571), "Martigues": (43.405, 5.048),
    "La Seyne-sur-Mer": (43.101, 5.879),
}

# (region code, spellings). Bare "Centre", "Nord" and "Champagne" are left out on
# purpose: they are ordinary words far more often than places; "Corse" (also "corsé",
# "ça se corse") and "Lorraine" (a first name) are ``word`` names, see _WORD_REGIONS.
_REGIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("FR-ARA", ("Auvergne-Rhône-Alpes", "Auvergne", "Rhône-Alpes")),
    ("FR-BFC", ("Bourgogne-Franche-Comté", "Bourgogne", "Franche-Comté", "Burgundy")),
    ("FR-BRE", ("Bretagne", "Brittany", "Breizh")),
    ("FR-CVL", ("Centre-Val de Loire", "Val de Loire")),
    ("FR-COR", ("Corse", "Corsica")),
    ("FR-GES", ("Grand Est", "Alsace", "Lorraine", "Champagne-Ardenne")),
    ("FR-HDF", ("Hauts-de-France", "Nord-Pas-de-Calais", "Picardie")),
    ("FR-IDF", ("Île-de-France", "IDF", "région parisienne")),
    ("FR-NOR", ("Normandie", "Normandy")),
    ("FR-NAQ", ("Nouvelle-Aquitaine", "Aquitaine", "Poitou-Charentes", "Limousin")),
    ("FR-OCC", ("Occitanie", "Languedoc", "Languedoc-Roussillon", "Midi-Pyrénées")),
    ("FR-PDL", ("Pays de la Loire",)),
    ("FR-PAC", ("Provence-Alpes-Côte d'Azur", "PACA", "Provence", "Côte d'Azur")),
)

_WORD_REGIONS = frozenset({"Corse", "Lorraine"})
# Words before an ambiguous name that make it a place (accents kept: "a" is weaker).
_WORD_CUES = frozenset({"à", "a", "au", "en", "sur", "de", "du", "d", "près", "pres",
                        "vers", "depuis", "near", "in", "at", "from", "around"})
_NO_ARTICLE_CUE = frozenset({"nice", "lens"})  # "a nice day", "a lens"
_STRICT_CUES = frozenset({"à", "near"})
_SENTENCE_END = frozenset(".!?…:;\n\"«(")


@dataclass(frozen=True, slots=True)
class _Entry:
    location: Location
    ambiguity: int


def _fold(name: str) -> str:
    """Lower case, no accents, letters and digits only: the gazetteer's lookup key."""
    decomposed = unicodedata.normalize("NFKD", name.lower())
    return "".join(c for c in decomposed if c.isalnum() and not unicodedata.combining(c))


def _words(name: str) -> list[str]:
    decomposed = unicodedata.normalize("NFKD", name.lower())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.findall(r"[a-z0-9]+", plain)


def _build() -> tuple[dict[str, _Entry], list[list[str]]]:
    """The lookup table (each spelling folded, "saint"/"st" variants) and word lists."""
    table: dict[str, _Entry] = {}
    spellings: list[list[str]] = []

    def add(spelling: str, entry: _Entry) -> None:
        if spelling in _WORD_REGIONS:
            entry = _Entry(entry.location, _WORD)
        words = _words(spelling)
        variants = [[]]
        for word in words:  # "saint" may be written "st"
            options = ("saint", "st") if word == "saint" else (word,)
            variants = [v + [o] for v in variants for o in options]
        for variant in variants:
            key = "".join(variant)
            previous = table.setdefault(key, entry)
            if previous.location != entry.location:
                raise ValueError(f"gazetteer spelling {spelling!r} is ambiguous")
            spellings.append(variant)

    for city, department, region, ambiguity, extra in _CITIES:
        entry = _Entry(Location(city, region, department), ambiguity)
        for spelling in (city, *extra):
            add(spelling, entry)
    for region, names in _REGIONS:
        entry = _Entry(Location("", region, ""), _PLAIN)
        for spelling in names:
            add(spelling, entry)
    return table, spellings


_TABLE, _SPELLINGS = _build()

# Accent variants per base letter, so the pattern runs on the raw text (no copy, and
# match positions point into the original for the capitalisation rule).
_ACCENTS = {
    "a": "aàâäáã", "c": "cç", "e": "eéèêë", "i": "iîïíì", "o": "oôöóò",
    "u": "uûüùú", "y": "yÿ",
}
_SEPARATOR = r"[\s\-'’._]*"


def _letter(char: str) -> str:
    variants = _ACCENTS.get(char)
    return f"[{variants}]" if variants else re.escape(char)


def _trie_pattern(spellings: list[list[str]]) -> str:
    """One regex alternation shaped like a trie of the spellings (fast to scan)."""
    trie: dict[str, dict] = {}
    for words in spellings:
        node = trie
        units = []
        for index, word in enumerate(words):
            if index:
                units.append(" ")
            units.extend(word)
        for unit in units:
            node = node.setdefault(unit, {})
        node[""] = {}  # end of a spelling

    def render(node: dict[str, dict]) -> str:
        branches = []
        ends = False
        for unit in sorted(node, key=lambda u: (u == "", u)):
            if unit == "":
                ends = True
                continue
            head = _SEPARATOR if unit == " " else _letter(unit)
            branches.append(head + render(node[unit]))
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        # Longer spellings are tried first; the end marker makes the rest optional.
        return f"(?:{body})?" if ends else body

    return render(trie)


# Whole words: no letter or digit before, no letter after (digits allowed: "Paris15").
_PATTERN = re.compile(r"(?<![^\W_])" + _trie_pattern(_SPELLINGS) + r"(?![^\W\d_])",
                      re.IGNORECASE)
_HASHTAG = re.compile(r"#(\w+)")
_CAMEL = re.compile(r"(?<=[a-zà-ÿ])(?=[A-ZÀ-Þ])")
_PREVIOUS_WORDS = re.compile(r"(\w+)\W*(?:(\w+)\W*)?$")


def extract_location(text: str, profile_location: str = "") -> Location | None:
    """The place a tweet is about: a city or region named in ``text``, else in the profile.

    Returns ``None`` when neither names a place of the gazetteer.
    """
    text, profile_location = _nfc(text), _nfc(profile_location)
    found = _find(text, in_profile=False) if text else None
    if found is None and "#" in text:
        found = _find_in_hashtags(text)
    if found is None and profile_location:
        found = _find(profile_location, in_profile=True)
    return found


def _nfc(text: str | None) -> str:
    """Raw text may carry decomposed accents ("E" + U+0301); the pattern wants "É"."""
    if not text:
        return ""
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def _find(text: str, in_profile: bool) -> Location | None:
    region: Location | None = None
    for match in _PATTERN.finditer(text):
        entry = _TABLE.get(_fold(match.group()))
        if entry is None:
            continue
        if entry.ambiguity and not in_profile and not _cued(text, match, entry.ambiguity):
            continue
        if entry.location.city:
            return entry.location
        if region is None:
            region = entry.location
    return region


def _find_in_hashtags(text: str) -> Location | None:
    """Camel-case hashtags read word by word: "#panneBordeaux" -> "panne Bordeaux"."""
    for hashtag in _HASHTAG.findall(text):
        spaced = _CAMEL.sub(" ", hashtag)
        if spaced != hashtag:
            found = _find(spaced, in_profile=False)
            if found is not None:
                return found
    return None


def _cued(text: str, match: re.Match[str], ambiguity: int) -> bool:
    """Whether an ambiguous name reads as a place here (rules in the module docstring)."""
    two_before, previous = _previous_words(text, match.start())
    name = match.group()
    if ambiguity == _STRICT:
        return previous in _STRICT_CUES or (
            previous in ("de", "d") and two_before in ("près", "pres"))
    if previous in _WORD_CUES and not (previous == "a" and _fold(name) in _NO_ARTICLE_CUE):
        return True
    title_case = name[0].isupper() and not name.isupper()
    return title_case and not _starts_sentence(text, match.start())


def _previous_words(text: str, start: int) -> tuple[str, str]:
    """The two words before ``start``, lower-cased ("" where there is none)."""
    words = _PREVIOUS_WORDS.search(text[max(0, start - 30):start])
    if words is None:
        return "", ""
    if words.group(2) is None:
        return "", words.group(1).lower()
    return words.group(1).lower(), words.group(2).lower()


def _starts_sentence(text: str, start: int) -> bool:
    before = text[:start].rstrip()
    if not before or before[-1] in _SENTENCE_END:
        return True
    last_word = before.rsplit(None, 1)[-1]
    return last_word.startswith("@")  # "@free Nice job" begins after the mention
