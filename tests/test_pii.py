"""PII scrubbing: a planted-PII corpus, a no-PII corpus that must come out unchanged,
and unit tests of each kind's tricky formats."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

import pytest

from stream_app.clean.pii import (PII_KINDS, ScrubResult, iban_checksum_ok, luhn_ok,
                                  scrub_pii)

PUBLIC = ("free", "Freebox", "FreeMobile", "Free_1337")


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


# ---------------------------------------------------------------- generators

def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    for last in "0123456789":
        if luhn_ok(body + last):
            return body + last
    raise AssertionError


def _iban(country: str, bban: str) -> str:
    moved = bban + country + "00"
    check = 98 - int("".join(str(int(c, 36)) for c in moved)) % 97
    return f"{country}{check:02d}{bban}"


def _spaced4(s: str) -> str:
    return " ".join(s[i:i + 4] for i in range(0, len(s), 4))


def gen_phone(rng: random.Random) -> tuple[str, str]:
    value = _phone_value(rng)
    return value, value


def _phone_value(rng: random.Random) -> str:
    d = lambda n: "".join(rng.choice("0123456789") for _ in range(n))  # noqa: E731
    pairs = [d(2) for _ in range(4)]
    mobile = rng.choice("67")
    fmt = rng.randrange(16)
    if fmt == 0:
        return f"0{mobile} " + " ".join(pairs)
    if fmt == 1:
        return f"0{mobile}." + ".".join(pairs)
    if fmt == 2:
        return f"0{mobile}-" + "-".join(pairs)
    if fmt == 3:
        return f"0{mobile}" + "".join(pairs)
    if fmt == 4:
        return f"+33 {mobile} " + " ".join(pairs)
    if fmt == 5:
        return f"+33 (0){mobile} " + " ".join(pairs)
    if fmt == 6:
        return f"0033{mobile}" + "".join(pairs)
    if fmt == 7:
        return f"+33{mobile}" + "".join(pairs)
    if fmt == 8:
        return f"0{rng.choice('12345')} " + " ".join(pairs)
    if fmt == 9:
        return "09 " + " ".join(pairs)
    if fmt == 10:
        return f"08 {rng.choice('0019')}{d(1)} " + " ".join(pairs[1:])
    if fmt == 11:
        return f"+44 20 {d(4)} {d(4)}"
    if fmt == 12:
        return f"+32 470 {d(2)} {d(2)} {d(2)}"
    if fmt == 13:
        return f"+1 (415) {d(3)}-{d(4)}"
    if fmt == 14:
        return f"0{mobile} {d(3)} {d(3)} {d(2)}"
    return f"+49 30 {d(8)}"


def gen_email(rng: random.Random) -> tuple[str, str]:
    first = rng.choice(["jean", "marie", "luc", "sophie", "karim", "ines", "paul", "chloe"])
    last = rng.choice(["dupont", "martin", "bernard", "nguyen", "moreau", "haddad"])
    num = str(rng.randrange(10, 99))
    provider = rng.choice(["gmail.com", "free.fr", "orange.fr", "hotmail.fr", "yahoo.fr",
                           "mail.free.fr", "laposte.net", "outlook.com"])
    name, dom = provider.split(".", 1)
    fmt = rng.randrange(10)
    if fmt == 0:
        return f"{first}.{last}@{provider}", first + "." + last
    if fmt == 1:
        return f"{first}.{last}+sav@{provider}", first + "." + last
    if fmt == 2:
        return f"{first}_{last}{num}@{provider}", first + "_" + last + num
    if fmt == 3:
        return f"{first[0]}.{last}@mail.{provider}", first[0] + "." + last
    if fmt == 4:
        return f"{first}.{last} [at] {name} [dot] {dom.replace('.', ' [dot] ')}", last
    if fmt == 5:
        return f"{first}{num}(at){provider}", first + num
    if fmt == 6:
        return f"{first}.{last} @ {provider}", first + "." + last
    if fmt == 7:
        return f"{first} arobase {name} point {dom.replace('.', ' point ')}", f"{first} arobase"
    if fmt == 8:
        return f"{first}.{last} (at) {name} (dot) {dom.replace('.', ' (dot) ')}", last
    return f"{first.upper()}.{last.upper()}@{provider.upper()}", first.upper()


def gen_iban(rng: random.Random) -> tuple[str, str]:
    d = lambda n: "".join(rng.choice("0123456789") for _ in range(n))  # noqa: E731
    country = rng.choice(["FR", "FR", "FR", "DE", "ES", "IT", "BE", "NL", "GB"])
    bban = {"FR": lambda: d(10) + d(11) + d(2), "DE": lambda: d(18), "ES": lambda: d(20),
            "IT": lambda: "X" + d(10) + d(12), "BE": lambda: d(12),
            "NL": lambda: "ABNA" + d(10), "GB": lambda: "NWBK" + d(14)}[country]()
    iban = _iban(country, bban)
    fmt = rng.randrange(4)
    if fmt == 3:  # a typo: checksum wrong, still scrubbed (safety first)
        iban = iban[:-1] + str((int(iban[-1]) + 1) % 10)
    return (_spaced4(iban) if fmt in (0, 3) else iban if fmt == 1 else _spaced4(iban).lower(),
            iban[4:12])


def gen_card(rng: random.Random) -> tuple[str, str]:
    fmt = rng.randrange(7)
    if fmt == 5:
        cvv = "".join(rng.choice("0123456789") for _ in range(3))
        return cvv, "cvv"  # the caller writes the "cryptogramme" context
    if fmt == 4:  # Amex 4-6-5
        n = _luhn_complete(rng.choice(["34", "37"]), 15, rng)
        return f"{n[:4]} {n[4:10]} {n[10:]}", n
    n = _luhn_complete(rng.choice(["4", "51", "53", "55", "2221"]), 16, rng)
    if fmt == 6:  # grouped but Luhn-invalid (a typo): still a card
        n = n[:-1] + str((int(n[-1]) + 1) % 10)
    if fmt in (0, 6):
        return _spaced4(n), n
    if fmt == 1:
        return "-".join(_spaced4(n).split()), n
    return n, n  # contiguous, Luhn-valid


def gen_customer_id(rng: random.Random) -> tuple[str, str]:
    d = lambda n: rng.choice("123456789") + "".join(rng.choice("0123456789")  # noqa: E731
                                                     for _ in range(n - 1))
    choices = [
        ("identifiant {}", d(8)), ("n° client {}", d(7)), ("numéro d'abonné {}", "FB" + d(8)),
        ("ref dossier {}", "2024-" + d(6)), ("mon identifiant freebox : {}", "8" + d(8)),
        ("contrat n°{}", "ABC" + d(6)), ("ticket #{}", d(6)), ("customer number {}", d(8)),
        ("account #{}", d(9)), ("n° de commande {}", "CMD" + d(7)), ("Réf. dossier : {}", d(10)),
        ("mon n° d'abonné est {}", d(8)), ("référence client {}", "FRB" + d(7)),
        ("ID {}", d(9)), ("my account number: {}", d(8)), ("prise PTO {}", f"FI-{d(4)}-{d(4)}"),
    ]
    ctx, code = rng.choice(choices)
    return ctx.format(code), code


PRIVATE_HANDLES = ["jean_dupont75", "Marie_B", "karimdu13", "SophieNguyen", "lucas2009",
                   "ines_h", "PaulMartin_", "chloe33", "Bordelais_du_33", "xX_gamer_Xx"]


def gen_handle(rng: random.Random) -> tuple[str, str]:
    name = rng.choice(PRIVATE_HANDLES)
    if rng.random() < 0.15:
        return f"@{name}@piaille.fr", name
    return f"@{name}", name


PLACES = [("Bordeaux", "33000"), ("Paris", "75015"), ("Lyon", "69003"), ("Marseille", "13008"),
          ("Lille", "59000"), ("Toulouse", "31000"), ("Nantes", "44000"), ("Rennes", "35000"),
          ("Montpellier", "34000"), ("Strasbourg", "67000")]


@dataclass
class Planted:
    text: str
    kinds: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)   # must be absent from the output
    numbers: list[str] = field(default_factory=list)   # their digits must be absent too
    places: list[str] = field(default_factory=list)    # must still be present
    public: list[str] = field(default_factory=list)    # public handles, must stay


FR_OPEN = ["Bonjour {pub}, toujours pas de fibre", "Panne générale ?",
           "Ça fait 3 jours sans internet",
           "Franchement {pub} c'est une honte", "La Freebox Pop clignote rouge depuis 14h30",
           "Coupure 4G depuis ce matin", "Toujours rien après 2 appels au 3244 😡",
           "Débit à 2 Mb/s au lieu de 1 Gb/s", "Merci {pub} pour la réactivité 🙏",
           "Facture de 49,99€ ce mois-ci ???"]
EN_OPEN = ["Hi {pub}, my internet is down again", "Still no signal since yesterday",
           "Paying 39.99 a month for this 🙄", "Outage again?", "Thanks {pub} for the quick fix",
           "Three days without fibre"]
FR_CTX = {
    "PHONE": ["rappelez-moi au {}", "mon numéro : {}", "joignable au {} 📞", "tel {}",
              "ma ligne {}", "({})"],
    "EMAIL": ["mon mail : {}", "écrivez-moi à {}", "contact {}", "<{}>", "mail={}"],
    "IBAN": ["mon IBAN {}", "prélèvement sur {}", "RIB : {}", "IBAN: {}."],
    "CARD": ["ma carte {}", "CB {} refusée", "payé avec {}", "carte bancaire n° {}"],
    "CVV": ["cryptogramme {}", "CVV: {}", "code de sécurité {}", "crypto {}"],
    "CUSTOMER_ID": ["{}", "{} svp", "({})", "{} !"],
    "HANDLE": ["cc {}", "{} t'as le même souci ?", "comme {}", "{} 👀"],
}
EN_CTX = {
    "PHONE": ["call me on {}", "my number is {}", "ring {} please"],
    "EMAIL": ["email me at {}", "my email: {}"],
    "IBAN": ["my IBAN is {}", "refund to {}"],
    "CARD": ["my card {} was charged twice", "card: {}"],
    "CVV": ["CVV {}", "security code {}"],
    "CUSTOMER_ID": ["{}", "{} thanks"],
    "HANDLE": ["same for {}", "{} has it too"],
}
GENERATORS = {"PHONE": gen_phone, "EMAIL": gen_email, "IBAN": gen_iban, "CARD": gen_card,
              "CUSTOMER_ID": gen_customer_id, "HANDLE": gen_handle}
PUNCT = [", ", " ", " - ", ". ", " ! ", " 😡 ", " 🙏 ", "... ", " ; "]


def build_corpus(n: int = 360, seed: int = 20260312) -> list[Planted]:
    rng = random.Random(seed)
    corpus: list[Planted] = []
    for i in range(n):
        english = rng.random() < 0.3
        ctxs = EN_CTX if english else FR_CTX
        pub = rng.choice(["@free", "@Freebox", "@FreeMobile", "@Free_1337", "@FREE"])
        item = Planted("")
        # Every kind at least once every 6 tweets, then 0-2 extra random ones.
        kinds = [PII_KINDS[i % len(PII_KINDS)]] + rng.sample(PII_KINDS, rng.randrange(3))
        # Position of the PII block: start, middle or end of the tweet; at the start or
        # end, half the time the first (last) item has no context word before (after) it.
        layout = rng.randrange(3)
        bare = rng.random() < 0.5
        pieces: list[str] = []  # one per planted item, with its context words
        for j, kind in enumerate(kinds):
            value, secret = GENERATORS[kind](rng)
            ctx_key = "CVV" if kind == "CARD" and secret == "cvv" else kind
            ctx = rng.choice(ctxs[ctx_key])
            if bare and ctx_key != "CVV" and ((layout == 0 and j == 0)
                                              or (layout == 2 and j == len(kinds) - 1)):
                ctx = "{}"
            pieces.append(ctx.format(value))
            item.kinds.append(kind)
            item.secrets.append(value)
            if secret != "cvv":
                item.secrets.append(secret)
            if kind in ("PHONE", "IBAN", "CARD", "CUSTOMER_ID") and secret != "cvv":
                # the whole number's digits (for a CUSTOMER_ID, only the code's digits)
                item.numbers.append(_digits(value if kind != "CUSTOMER_ID" else secret))
        block = rng.choice([", ", " ", " et " if not english else " and ", " 📞 "]).join(pieces)
        # A place: city, postcode or both, in several orders; sometimes a street.
        city, postcode = rng.choice(PLACES)
        place = rng.choice([f"à {city} {postcode}", f"{postcode} {city}", f"panne {city}",
                            f"{city} ({postcode})",
                            f"{city} 15e" if city == "Paris" else f"à {city}",
                            f"rue de la Paix, {postcode} {city}"])
        item.places += [city] + ([postcode] if postcode in place else [])
        if "rue de la Paix" in place:
            item.places.append("rue de la Paix")
        opener = rng.choice(EN_OPEN if english else FR_OPEN)
        if "{pub}" in opener:
            item.public.append(pub)
            opener = opener.replace("{pub}", pub)
        parts = [opener, place]
        parts.insert(layout, block)
        text = parts[0]
        for part in parts[1:]:
            text += rng.choice(PUNCT) + part
        item.text = text + rng.choice([" !", ".", " 😡", " ?", "", "", ""])
        corpus.append(item)
    return corpus


CORPUS = build_corpus()


def test_corpus_is_big_varied_and_deterministic() -> None:
    assert len(CORPUS) >= 300
    assert [c.text for c in CORPUS[:5]] == [c.text for c in build_corpus()[:5]]
    counts = {k: sum(c.kinds.count(k) for c in CORPUS) for k in PII_KINDS}
    assert min(counts.values()) >= 60, counts
    assert sum(len(c.kinds) > 1 for c in CORPUS) >= 100  # several items per tweet
    assert sum(c.text.startswith(c.secrets[0]) for c in CORPUS) >= 30  # PII first
    ends = re.compile(r"[ !.?😡]*$")
    assert sum(any(ends.fullmatch(c.text.rsplit(s, 1)[-1]) for s in c.secrets if s in c.text)
               for c in CORPUS) >= 30  # PII last, maybe followed by punctuation


@pytest.mark.parametrize("item", CORPUS, ids=lambda c: c.text[:40])
def test_no_planted_pii_survives(item: Planted) -> None:
    result = scrub_pii(item.text, PUBLIC)
    out = result.text
    for secret in item.secrets:
        assert secret not in out, (secret, out)
        assert secret.lower() not in out.lower(), (secret, out)
    out_digits = _digits(out)
    for number in item.numbers:
        assert number not in out_digits, (number, out)
    assert list(result.found) == item.kinds, (item.text, out)
    for place in item.places:
        assert place in out, (place, out)
    for pub in item.public:
        assert pub in out, (pub, out)


# ---------------------------------------------------------------- no PII: unchanged

NO_PII = [
    "@free toujours pas de connexion fibre à Bordeaux depuis ce matin, la Freebox Pop clignote",
    "Panne générale ? Plus de 4G sur Free Mobile à Lyon 3 depuis 14h30, appelé le 3244",
    "29,99€ par mois pour 300 Mb/s au lieu de 1 Gb/s promis... @Freebox vraiment nul",
    "my internet is still down since this morning, paying 39.99 a month. at home since 2 days",
    "Merci au technicien passé ce matin, tout remarche ! https://t.co/AbC123xyz",
    "Bonjour, impossible de joindre le service client depuis 3 jours, 45 minutes au 3244 !!",
    "RDV technicien le 12/03/2026 entre 8h et 12h, personne n'est venu @Free_1337",
    "Coupure le 2026-03-12 à 14:30, retour à 18h45. Lyon 69003",
    "Le 01.03.2026 14h30 la box a redémarré toute seule, encore le 05.03.2026 14.30",
    "Appelez le 3239 ou le 1044 pour Free Mobile, c'est gratuit depuis une box",
    "+10 000 abonnés touchés à Marseille selon Downdetector, 75% en fibre",
    "La Freebox Ultra à 49,99 €/mois, 8 Gb/s symétrique, ça vaut le coup ?",
    "iPhone 15 Pro reçu hier, pas de 5G avec Free Mobile à Paris 15e",
    "Ping à 12 ms, upload 700 Mbit/s, download 7 Gbit/s : merci @Freebox",
    "Voir https://x.com/free/status/1899112233445566777 pour l'annonce officielle",
    "Thread ici https://twitter.com/FreeMobile/status/1234567890123456789?s=20",
    "3e jour sans internet, 72 heures, 4320 minutes... @free",
    "Freebox Delta, Freebox Revolution, Freebox mini 4K : laquelle choisir en 2026 ?",
    "Forfait 2€ à 0€ pour les abonnés Freebox, 210 Go en 5G",
    "Débit tombé de 950 Mb/s à 3 Mb/s depuis 19h, Toulouse 31000",
    "75015 Paris : plus de réseau depuis 2h, c'est général ?",
    "Panne à Bordeaux 33000 et Mérignac, plus de 200 personnes concernées",
    "12 rue de la Paix, 75002 Paris : armoire fibre ouverte depuis 2 semaines",
    "client depuis 2015, 11 ans de fidélité et voilà le résultat",
    "client Free 33000 Bordeaux, 3 coupures cette semaine",
    "abonné freebox 75015 paris, débit en baisse de 40%",
    "Ticket ouvert depuis 3 jours, toujours rien. Lille 59000",
    "Facture de 45,98 € au lieu de 29,99 €, +53% sans prévenir",
    "Commande du 12/03/2026, box toujours pas livrée",
    "1 299 € pour un iPhone 16 chez Free, ça pique",
    "J'ai appelé 3 fois, 2 fois raccroché au nez. 1/10",
    "Le 4G+ à 150 Mb/s en 2024, 20 Mb/s en 2026. Progrès ?",
    "Vitesse 1,2 Gb/s en wifi 7, bravo @Freebox",
    "La box a planté à 03:12 puis 04:45 puis 06:10",
    "Mise à jour 4.8.12 de la Freebox installée ce matin",
    "Firmware v1.4.20, toujours le bug du wifi 5 GHz",
    "100% des clients Free Mobile de Rennes 35000 sans réseau",
    "Plus de 2 000 signalements à 18h selon Downdetector",
    "look at free.fr/assistance, nothing about the outage",
    "I'm at home, no signal at all since 8am",
    "Go to www.free.fr and check the status page",
    "The outage started at 2:30 pm, 3 hours ago",
    "Average speed 45.6 Mbps, expected 500 Mbps",
    "Year 2026 and still ADSL at 8 Mb/s in Nantes 44000",
    "0,5% de remise, vraiment ? 😂",
    "Durée d'attente : 1h15 au 3244 puis coupé",
    "Panne 5G à Montpellier 34000 entre 10h et 11h30",
    "2 box, 3 répéteurs, 0 connexion. Merci @free",
    "Livraison prévue sous 48h, 5 jours après toujours rien",
    "Prix passé de 19,99 à 24,99 depuis le 1er mars 2026",
    "J'ai reçu 3 SMS de Free à 7h02, 7h05 et 7h09",
    "Enfin réparé après 21 jours, merci au technicien 👍",
    "Test : 936 Mb/s down / 612 Mb/s up / 9 ms",
    "Freebox Pop 2 à 29,99€ les 12 premiers mois",
    "4K, 8K, 10G-EPON : la Freebox Ultra est au top @Freebox",
    "Page officielle https://www.free.fr/assistance/12345-panne-fibre.html",
    "Temps de réponse du SAV : 4 jours 2 heures",
    "@FreeMobile 1 mois sans data, 60 Go perdus",
    "Mon forfait 5G 250 Go à 19,99€/mois, pas mal",
    "Strasbourg 67000, Lille, Rouen : même panne, même heure 17h",
    "On est le 15/04/2026 et la fibre n'est toujours pas là",
    "Remboursement de 12,50 € reçu, merci @Free_1337",
    "Panne réseau : 3244, 1044 ou 3179 pour le RIO, lequel appeler ?",
    "Freebox Server v6 et Player Devialet, 2 TB de stockage",
    "Débit de 1 000 Mb/s annoncé, 100 Mb/s mesuré",
    "My ticket is still open after 3 days",
    "security update 2.14 broke my wifi",
    "Tout le 33 est touché ? Bordeaux, Pessac, Talence",
    "Ticket #4821 ouvert il y a 3 jours, panne à Bordeaux 33000",
    "client depuis 2015, ligne 1 Gb/s, Lyon 69003, réf box R7-2",
]


def test_no_pii_corpus_is_big() -> None:
    assert len(NO_PII) >= 60


@pytest.mark.parametrize("text", NO_PII)
def test_text_without_pii_is_unchanged(text: str) -> None:
    assert scrub_pii(text, PUBLIC) == ScrubResult(text, ())


# ---------------------------------------------------------------- unit tests per kind

def _one(text: str, kind: str, expected: str) -> None:
    result = scrub_pii(text, PUBLIC)
    assert result.text == expected, result
    assert result.found == (kind,) * expected.count(f"<{kind}>")


@pytest.mark.parametrize("text, expected", [
    ("mail: jean.dupont@gmail.com.", "mail: <EMAIL>."),
    ("marie+sav@mail.free.fr svp", "<EMAIL> svp"),
    ("jean.dupont [at] gmail [dot] com", "<EMAIL>"),
    ("écrivez à jean(at)orange.fr merci", "écrivez à <EMAIL> merci"),
    ("jean.dupont @ gmail.com", "<EMAIL>"),
    ("jean dot dupont at gmail dot com", "<EMAIL>"),
    ("luc arobase free point fr", "<EMAIL>"),
    ("luc{at}sfr{dot}fr, merci", "<EMAIL>, merci"),
    ("JEAN.DUPONT@FREE.FR", "<EMAIL>"),
    ("(paul_75@hotmail.fr)", "(<EMAIL>)"),
])
def test_email(text: str, expected: str) -> None:
    _one(text, "EMAIL", expected)


def test_email_is_not_a_handle_and_bare_at_needs_an_obfuscated_dot() -> None:
    assert scrub_pii("jean@free.fr @free", PUBLIC) == ScrubResult("<EMAIL> @free", ("EMAIL",))
    assert scrub_pii("look at free.fr/assistance at 14h30").found == ()
    # "point final" is not a TLD: the address stops at "dot com"
    assert scrub_pii("jean at gmail dot com point final").text == "<EMAIL> point final"


@pytest.mark.parametrize("text, expected", [
    ("06 12 34 56 78", "<PHONE>"),
    ("tel 06.12.34.56.78 !", "tel <PHONE> !"),
    ("06-12-34-56-78", "<PHONE>"),
    ("(0612345678)", "(<PHONE>)"),
    ("+33 6 12 34 56 78", "<PHONE>"),
    ("+33 (0)6 12 34 56 78", "<PHONE>"),
    ("0033612345678", "<PHONE>"),
    ("+33612345678.", "<PHONE>."),
    ("fixe 01 23 45 67 89 ou 09 72 12 34 56", "fixe <PHONE> ou <PHONE>"),
    ("0800 123 456", "<PHONE>"),
    ("ma ligne 0612345678", "ma ligne <PHONE>"),
    ("+44 20 7946 0958", "<PHONE>"),
    ("+1 (415) 555-2671", "<PHONE>"),
    ("appelle le 06 12 34 56 78 2 fois", "appelle le <PHONE> 2 fois"),
    ("06 12 34 56 78, 07 98 76 54 32", "<PHONE>, <PHONE>"),
])
def test_phone(text: str, expected: str) -> None:
    _one(text, "PHONE", expected)


@pytest.mark.parametrize("text", [
    "appelez le 3244", "le 3239 ou le 1044", "à 14h30", "le 12/03/2026", "29,99€",
    "300 Mb/s", "1 Gb/s", "en 2026", "50%", "https://x.com/free/status/1899112233445566778",
    "+10 000 000 abonnés", "le 01.03.2026 14h30", "05.03.2026 14.30", "ça coûte 1 299 €",
])
def test_not_a_phone(text: str) -> None:
    assert scrub_pii(text, PUBLIC).found == ()


def test_iban() -> None:
    _one("IBAN FR76 3000 6000 0112 3456 7890 189 merci", "IBAN", "IBAN <IBAN> merci")
    _one("FR7630006000011234567890189.", "IBAN", "<IBAN>.")
    _one("DE89 3704 0044 0532 0130 00", "IBAN", "<IBAN>")
    _one("GB33BUKB20201555555555", "IBAN", "<IBAN>")
    _one("fr76 3000 6000 0112 3456 7890 189", "IBAN", "<IBAN>")
    # checksum wrong (a typo): scrubbed anyway, safety first
    assert not iban_checksum_ok("FR76 3000 6000 0112 3456 7890 188")
    _one("FR76 3000 6000 0112 3456 7890 188", "IBAN", "<IBAN>")
    assert iban_checksum_ok("FR76 3000 6000 0112 3456 7890 189")
    # IBAN-shaped but only 3 digits after the check digits: a product code, kept
    assert scrub_pii("rappel au 06 12 34 56 78, modèle BE20 XR4T QP7L ZZ9A").text == \
        "rappel au <PHONE>, modèle BE20 XR4T QP7L ZZ9A"


@pytest.mark.parametrize("text", [
    "FR12 pour la box", "Freebox FB12 3456", "code promo FREE2026SUMMER", "MP4 H264 AAC",
    "SM-A556B", "FTTH FR75 Paris", "version FR20 2024 0001",
])
def test_not_an_iban(text: str) -> None:
    assert scrub_pii(text, PUBLIC).found == ()


def test_card() -> None:
    _one("carte 4970 1012 3456 7893 refusée", "CARD", "carte <CARD> refusée")
    _one("4111-1111-1111-1111", "CARD", "<CARD>")
    _one("4111111111111111", "CARD", "<CARD>")  # contiguous, Luhn-valid
    _one("amex 3782 822463 10005", "CARD", "amex <CARD>")
    _one("4970 1012 3456 7894", "CARD", "<CARD>")  # grouped, Luhn-invalid: still a card
    _one("cryptogramme 123", "CARD", "cryptogramme <CARD>")
    _one("CVV: 456, exp 12/27", "CARD", "CVV: <CARD>, exp 12/27")
    _one("crypto 4970 1012 3456 7893 cvv 123", "CARD", "crypto <CARD> cvv <CARD>")
    assert luhn_ok("4970101234567893") and not luhn_ok("4970101234567894")


def test_not_a_card() -> None:
    # contiguous and Luhn-invalid: an id, not a card (tweet ids, order numbers)
    assert scrub_pii("tweet 1899112233445566771").found == ()
    assert not luhn_ok("1899112233445566771")
    # phones with 13 digits are phones, not cards
    assert scrub_pii("0033612345678 +86 138 1234 5678").found == ("PHONE", "PHONE")


@pytest.mark.parametrize("text, expected", [
    ("identifiant 12345678", "identifiant <CUSTOMER_ID>"),
    ("n° client 1234567", "n° client <CUSTOMER_ID>"),
    ("numéro d'abonné FB12345678", "numéro d'abonné <CUSTOMER_ID>"),
    ("ref dossier 2024-123456", "ref dossier <CUSTOMER_ID>"),
    ("mon identifiant freebox : 812345678", "mon identifiant freebox : <CUSTOMER_ID>"),
    ("contrat n°ABC123456", "contrat n°<CUSTOMER_ID>"),
    ("ticket #123456", "ticket #<CUSTOMER_ID>"),
    ("my customer number is 12345678", "my customer number is <CUSTOMER_ID>"),
    ("identifiant 812 345 678 depuis 3 jours", "identifiant <CUSTOMER_ID> depuis 3 jours"),
    ("valid ticket 123456", "valid ticket <CUSTOMER_ID>"),
    ("prise PTO FI-1234-5678", "prise PTO <CUSTOMER_ID>"),
    ("n° de série 123456789 de la box", "n° de série <CUSTOMER_ID> de la box"),
])
def test_customer_id(text: str, expected: str) -> None:
    _one(text, "CUSTOMER_ID", expected)


def test_customer_id_context_and_exceptions() -> None:
    assert scrub_pii("ligne 0612345678").found == ("PHONE",)
    assert scrub_pii("ticket #1234").found == ()  # fewer than 5 digits
    assert scrub_pii("12345678").found == ()  # no keyword
    assert scrub_pii("facture du 2026-03-12").found == ()  # a date
    assert scrub_pii("client Free 33000 Bordeaux").found == ()  # a postcode
    assert scrub_pii("ticket 33000 merci").found == ("CUSTOMER_ID",)  # not before a city


def test_handles() -> None:
    r = scrub_pii("@free @Freebox @jean_dupont @FREEMOBILE merci @Marie75 ! @Free_1337", PUBLIC)
    assert r.text == "@free @Freebox <HANDLE> @FREEMOBILE merci <HANDLE> ! @Free_1337"
    assert r.found == ("HANDLE", "HANDLE")
    assert scrub_pii("@free", ["@FREE"]).text == "@free"  # "@" and case ignored
    assert scrub_pii("@free", {"free"}).text == "@free"    # any collection
    assert scrub_pii("@free").text == "<HANDLE>"           # nothing public by default
    assert scrub_pii("@jean@piaille.fr", PUBLIC).text == "<HANDLE>"
    assert scrub_pii("https://x.com/JeanD/status/123 https://x.com/free/status/456",
                     PUBLIC).text == \
        "https://x.com/<HANDLE>/status/123 https://x.com/free/status/456"
    assert scrub_pii("https://piaille.fr/@jean", PUBLIC).text == "https://piaille.fr/@<HANDLE>"


def test_several_kinds_in_order_of_appearance() -> None:
    r = scrub_pii("@jean mon IBAN FR7630006000011234567890189, tel 0612345678, "
                  "mail j@x.fr, carte 4111 1111 1111 1111, client 12345678", PUBLIC)
    assert r.text == ("<HANDLE> mon IBAN <IBAN>, tel <PHONE>, mail <EMAIL>, carte <CARD>, "
                      "client <CUSTOMER_ID>")
    assert r.found == ("HANDLE", "IBAN", "PHONE", "EMAIL", "CARD", "CUSTOMER_ID")


def test_places_survive_next_to_pii() -> None:
    r = scrub_pii("panne à Bordeaux 33000, rappel au 06 12 34 56 78, 12 rue de la Paix "
                  "75002 Paris, Paris 15e", PUBLIC)
    assert r.text == ("panne à Bordeaux 33000, rappel au <PHONE>, 12 rue de la Paix "
                      "75002 Paris, Paris 15e")


def test_urls_are_protected() -> None:
    # this tweet id is Luhn-valid: outside a URL it would read as a card number
    assert luhn_ok("1899112233445566777")
    assert scrub_pii("1899112233445566777").found == ("CARD",)
    url = "https://x.com/free/status/1899112233445566777"
    assert scrub_pii(url, PUBLIC) == ScrubResult(url, ())
    assert scrub_pii("mail jean@free.fr https://t.co/AbC123", PUBLIC).text == \
        "mail <EMAIL> https://t.co/AbC123"


def test_empty_and_unicode() -> None:
    assert scrub_pii("") == ScrubResult("", ())
    # a character that grows when lowercased does not shift the spans
    assert scrub_pii("İİ tel 0612345678 İ").text == "İİ tel <PHONE> İ"
