"""Generated tweet dumps for benchmarks: realistic row shapes (the seed export's 12
columns, French customer-care texts of typical length), written as a stream so a
multi-million-row file costs no memory."""

from __future__ import annotations

import csv
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

HEADER = ["id", "created_at", "full_text", "name", "screen_name", "user_location",
          "in_reply_to_screen_name", "in_reply_to_status_id", "retweet_count", "favorite_count",
          "lang", "retweeted"]
_OPENINGS = ["@free", "@Freebox", "@FreeMobile", "Bonjour @free,", "", "Franchement", "Encore"]
_BODIES = [
    "toujours pas de connexion depuis ce matin, la box clignote rouge",
    "merci au technicien passé hier, la fibre marche nickel maintenant",
    "ma facture a encore augmenté sans prévenir, je veux une explication",
    "plus de réseau 4G dans tout le quartier depuis 2 jours",
    "le service client ne répond pas, 45 minutes d'attente au 3244",
    "la nouvelle Freebox Ultra est vraiment rapide, bravo",
    "coupure internet à {city} depuis 14h, c'est inadmissible",
    "my internet has been down all day, any update on the outage?",
]
_CITIES = ["Paris", "Lyon", "Marseille", "Bordeaux", "Lille", "Nantes", "Toulouse", "Rennes"]


def write_dump(path: Path, rows: int, seed: int = 7,
               start: datetime = datetime(2026, 3, 12, tzinfo=timezone.utc),
               first_id: int = 1_900_000_000_000_000_000) -> Path:
    rng = random.Random(seed)
    moment = start
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for i in range(rows):
            moment += timedelta(milliseconds=rng.randint(50, 2000))
            city = rng.choice(_CITIES)
            text = f"{rng.choice(_OPENINGS)} {rng.choice(_BODIES).format(city=city)}".strip()
            writer.writerow([str(first_id + i), moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                             text, f"User {i % 5000}", f"user_{i % 5000}",
                             city if rng.random() < 0.1 else "", "free", "", rng.randint(0, 3),
                             rng.randint(0, 9), "fr", "false"])
    return path
