"""A labelled tweet flood for the clean stage's duplicate detector, and its scoring.

``generate_flood`` builds, from a fixed seed, a stream of synthetic customer-care tweets
(French and English, about a French operator: fibre/internet outages, mobile network,
billing, customer service, offers, praise, questions, chatter) over four hours of event
time, in *arrival* order (the order of the list), and labels every tweet with the truth:

* normal traffic (``n_normal``): independent tweets, all originals. They are the hard
  negatives: thousands of customers complain about the same few things (an outage in a
  handful of cities, a price rise, the hotline) with the same everyday vocabulary. Each
  tweet is an opener, one or two *frames* (a frame is a sequence of slots, each with
  several interchangeable wordings: "plus de|toujours pas de|..." + "connexion|fibre|..."
  + place + "depuis" + time), often a personal context, a feeling or a closing, an
  interjection, emojis or a hashtag, and is then written in its author's style
  (abbreviations "tjrs"/"pr"/"jsuis", typos, case). Two tweets about the same topic share
  words and short phrases ("depuis ce matin", "pas de connexion") but are not copies:
  the generator draws again when a tweet repeats an earlier one's frames *and* every
  wording choice, or (from 5 words) its letters. Short generic tweets ("@free merci !",
  "@free toujours rien") do repeat, as they do in reality, and are not duplicates either.
  Some independent tweets still end up nearly identical to another one (short frames,
  same choices but one); they are labelled as what they are, independent, and cost a
  text-similarity detector some precision (about 1 % of them at Jaccard >= 0.6).
* copy-paste campaigns (``n_campaigns`` x ``copies_per_campaign``): a seed text posted
  once (an original), then copied by other accounts spread over the rest of the timeline,
  each copy with one to three light edits: another @mention, an emoji added or removed,
  a hashtag added or removed, one word swapped for a synonym, punctuation or case
  changed, a number changed, a URL appended (last), a word elongated ("nuuuul"). Truth:
  the seed's id, kind ``near_duplicate``. Most seeds are long militant texts; about one
  in five is a short slogan (6-9 words), where a single synonym weighs a lot. Copies
  never arrive before their seed.
* retweets (``n_retweets``): ``RT @author: <text>``, ``is_retweet`` true, cut at 140
  characters with an ellipsis when longer (as the API did). 90 % retweet an earlier
  tweet of the stream (truth: that tweet's family original: the seed for a campaign
  copy); 10 % retweet one of a few brand or news posts that are not in the stream: the
  first retweet of such a post is the reference (truth ``""``) and the later ones point
  at it.
* exact replays (``n_replayed``): an earlier tweet sent again, same id, text and event
  time, arriving 1 s to 20 min later (truth: its own id, kind ``exact``).

Arrival order is event time plus a small random delivery lag, so event times are only
roughly increasing, as in a replay.

``score`` compares a detector's decisions with the truth: a tweet is a positive when its
truth has an original (``truth_original != ""``), a decision is a positive when it names
one (``duplicate_of != ""``), and a predicted positive is a true positive only when it
names the right original (for an exact replay: its own id).

Generation and scoring use the standard library only. ``python -m bench.clean_flood
[--json PATH]`` measures the detector of ``stream_app.clean.dedup`` (and a few variants of
it, ``VARIANTS``) on the default flood: precision, recall, F1, CPU throughput of
``check``, steady-state throughput and memory per stored tweet.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

START = 1773302400.0        # 2026-03-12T08:00:00Z
DURATION = 4 * 3600.0
KINDS = ("original", "retweet", "near_duplicate", "exact")


@dataclass(frozen=True)
class FloodTweet:
    id: str
    text: str
    event_time: float
    is_retweet: bool
    truth_original: str   # "" when the tweet is an original; else the id of its family's first tweet
    truth_kind: str       # "original" | "retweet" | "near_duplicate" | "exact"


# --------------------------------------------------------------------------- vocabulary

CITIES = ("Paris", "Lyon", "Marseille", "Bordeaux", "Lille", "Nantes", "Toulouse",
          "Rennes", "Nice", "Strasbourg", "Montpellier", "Grenoble", "Dijon", "Brest",
          "Rouen", "Reims", "Tours", "Metz", "Caen", "Angers", "Nancy", "Limoges",
          "Amiens", "Perpignan", "Besançon", "Orléans", "Mulhouse", "Avignon", "Pau")
# The outage is where most complaints come from: topical overlap on purpose.
HOT_CITIES = ("Lyon", "Bordeaux", "Marseille")
DISTRICTS = ("centre-ville", "le 3e", "le 7e", "la Croix-Rousse", "Villeurbanne",
             "Mérignac", "Pessac", "Talence", "les Chartrons", "la Joliette", "le Panier",
             "Vénissieux", "Bron", "le quartier de la gare", "la zone industrielle",
             "mon quartier", "ma rue", "ma résidence", "tout l'immeuble", "le lotissement")
MENTIONS_FR = ("@free", "@Freebox", "@FreeMobile", "@free @Freebox", "@Free_1337")
OPENERS_FR = ("{m}", "{m}", "{m}", "Bonjour {m},", "Bonjour {m}", "{m} bonjour,",
              "Salut {m}", "Hello {m}", "Allô {m} ?", "Franchement {m}", "Sérieux {m}",
              "Encore {m}", "Coucou {m},", "Bonsoir {m},", "Euh {m}", "Dites {m},",
              "Bon {m},", "Au secours {m}", "Eh oh {m}", "", "", "")
OPENERS_EN = ("{m}", "{m}", "Hi {m},", "Hello {m}", "Hey {m}", "{m} hi,", "Seriously {m}",
              "Dear {m},", "Morning {m},", "")
WHEN_FR = ("ce matin", "hier soir", "cette nuit", "midi", "{h}h", "{h}h{mm}", "{n} jours",
           "{n} heures", "hier", "lundi", "mardi", "le week-end", "ce week-end",
           "plus d'une heure", "deux jours", "trois jours", "une semaine", "le début de l'après-midi",
           "l'orage", "la mise à jour", "le passage du technicien", "{n} h")
WHEN_EN = ("this morning", "last night", "yesterday", "{h}am", "{h}pm", "{n} hours",
           "{n} days", "Monday", "the weekend", "the storm", "lunchtime", "the update")
EMOJIS = ("😡", "🤬", "😤", "😩", "😭", "🙄", "👎", "💩", "😠", "🤡", "😒", "🥲", "😅",
          "🙏", "👍", "😂", "🔥", "📵", "📡", "⚡")
POS_EMOJIS = ("👍", "🙏", "😊", "👏", "❤️", "🥳", "✨", "😍", "💪")
HASHTAGS = ("#panne", "#Free", "#Freebox", "#fibre", "#internet", "#SAV", "#FreeMobile",
            "#boycott", "#arnaque", "#teletravail", "#4G", "#5G", "#facture", "#coupure")
# Normal traffic is built from *frames*: a frame is a sequence of slots, a slot lists
# interchangeable wordings separated by "|" (an empty wording drops the slot). Two
# customers describing the same problem pick the same frame often, the same wording of
# every slot rarely, and then write it in their own style (abbreviations, typos).
NEG_FR = ("plus de|toujours pas de|pas de|aucune|zéro|on n'a plus de|j'ai plus de|je n'ai plus de|"
          "nous n'avons plus de|encore pas de|y a plus de|coupure de|panne de|toujours aucune|rien, pas de")
SVC_FR = "connexion|internet|fibre|réseau|wifi|net|tv|téléphone fixe|ligne|adsl|box|freebox|débit"
SINCE_FR = "depuis|depuis|depuis|depuis maintenant|et ce depuis|ça dure depuis|dep"
FRAMES_FR: dict[str, tuple[tuple[str, ...], ...]] = {
    "outage": (
        (NEG_FR, SVC_FR, "{where}", SINCE_FR, "{when}"),
        (NEG_FR, SVC_FR, SINCE_FR, "{when}", "{where}"),
        ("la box|ma box|ma freebox|le boîtier|la freebox|mon modem",
         "clignote|clignote en|reste bloquée en|est bloquée sur|affiche du|passe au",
         "rouge|orange|blanc|rouge et blanc|bleu",
         "{since_when}|et rien ne marche|sans arrêt|", ""),
        ("impossible de|pas moyen de|je ne peux pas|j'arrive pas à|je peux même pas|on ne peut plus",
         "bosser|me connecter|regarder la tv|télétravailler|faire ma visio|jouer en ligne|"
         "suivre mes cours|envoyer un mail|travailler|appeler",
         "à cause de la panne|sans internet|{where}|{since_when}|", ""),
        ("c'est quand que|une idée de quand|vous savez quand|c'est prévu pour quand|quand est-ce que|"
         "on peut savoir quand",
         "ça revient|la connexion sera rétablie|ça remarche|la fibre revient|ce sera réparé|"
         "vous réparez|internet revient|on récupère le net",
         "{where}", "?|??|?!| ?"),
        ("il y a une panne|y a un souci|un incident en cours|c'est une panne générale|panne en cours|"
         "quelqu'un d'autre a une panne|vous avez un problème réseau",
         "{where}", "?|??| ?|"),
        ("ça fait|voilà|cela fait|déjà",
         "{n} heures|{n} jours|{n}h|une journée|deux jours|trois jours|une semaine|{n} jours entiers",
         "que|qu'",
         "la connexion|internet|la fibre|le wifi|le net|la box|la ligne",
         "ne marche plus|est coupée|ne fonctionne pas|saute|rame|est HS|est en panne|est morte"),
        ("le débit|la connexion|mon débit|la vitesse|le wifi",
         "est tombé à|plafonne à|ne dépasse pas|est à|tourne à",
         "{n} méga|{n} Mb|{n} mégas|rien du tout|{n} kb",
         "{since_when}|le soir|en ce moment|"),
        ("ça coupe|la connexion saute|le wifi décroche|internet coupe|ça déconnecte|la box redémarre",
         "toutes les {n} minutes|sans arrêt|plusieurs fois par heure|h24|tout le temps|en boucle",
         "{since_when}|"),
    ),
    "mobile": (
        (NEG_FR, "réseau|4G|5G|data|signal|barre de réseau|réseau mobile|internet mobile",
         "{where}", "{since_when}"),
        ("mes appels|les appels|mes communications|les appels entrants",
         "coupent|sautent|raccrochent tout seuls|ne passent pas|tombent",
         "{where}|sans arrêt|au bout de {n} secondes|à chaque fois|", "{since_when}|"),
        ("impossible d'envoyer|je ne peux plus envoyer|pas moyen d'envoyer|j'arrive plus à envoyer",
         "des sms|des mms|de messages|le moindre sms", "{since_when}|{where}|"),
        ("la 5G|la 4G|le réseau|la couverture|le signal",
         "ne capte nulle part|ne passe pas|est inexistant|sature|est catastrophique|est nul",
         "{where}", "tous les soirs|le week-end|aux heures de pointe|en ce moment|"),
        ("ma carte sim|la sim|mon téléphone|mon portable",
         "n'est plus reconnue|affiche pas de service|indique aucun réseau|est en appels d'urgence seulement",
         "{since_when}"),
        ("mon forfait|ma ligne mobile|mon mobile|mon abonnement mobile",
         "ne marche plus|est coupé|est suspendu sans raison|ne fonctionne plus", "{since_when}|"),
    ),
    "billing": (
        ("ma facture|la facture|mon abonnement|mon forfait|le prix de la box|l'abonnement",
         "a augmenté de|a pris|a grimpé de|passe à +|prend",
         "{n} euros|{n}€|{n} balles",
         "sans prévenir|sans aucune explication|ce mois-ci|sans que je sois averti|du jour au lendemain|"),
        ("on m'a prélevé|vous m'avez prélevé|j'ai été débité de|prélèvement de|vous m'avez pris",
         "{n} euros|{n}€", "de trop|en double|deux fois|pour rien|sans raison",
         "ce mois-ci|le {n}|en janvier|hier|"),
        ("j'attends|toujours en attente de|où en est|aucune nouvelle de|je ne vois toujours pas",
         "mon remboursement|le remboursement promis|mon avoir|le geste commercial|mes {n} euros",
         "{since_when}|depuis {n} semaines|promis au téléphone|"),
        ("pourquoi|comment se fait-il que|expliquez-moi pourquoi|on m'explique pourquoi",
         "je paye|je suis facturé|on me compte|vous me facturez",
         "une option|un service|{n} euros pour une option|l'option tv|un abonnement",
         "que je n'ai pas demandée|jamais souscrite|que j'ai résiliée|dont je ne veux pas", "?|??|"),
        ("on me facture|je paye encore|vous me facturez toujours|je suis encore facturé pour",
         "la box|le décodeur|la location du matériel|le boîtier tv",
         "alors que je l'ai renvoyée|pourtant rendue|que j'ai retournée|déjà restituée",
         "il y a {n} semaines|le mois dernier|en recommandé|{since_when}"),
        ("facture|ma facture|cette facture|le détail de la facture",
         "incompréhensible|illisible|pleine d'erreurs|délirante|fausse",
         "qui peut m'expliquer ?|help|quelqu'un comprend ?|"),
        ("prélèvement de {n} euros|{n} euros prélevés|encore {n} euros|un prélèvement",
         "pour un abonnement|sur une ligne|pour un compte",
         "résilié|clôturé|fermé depuis {n} mois|résilié il y a {n} mois"),
    ),
    "service": (
        ("{n} minutes|{n} min|plus d'une heure|{n} heures",
         "d'attente|à attendre|de musique d'attente|pendu au téléphone",
         "au {hotline}|au téléphone|sur le chat|avec le support",
         "et toujours personne|pour rien|et ça raccroche|sans réponse|"),
        ("le service client|votre hotline|le support|le conseiller|le chat|le {hotline}",
         "raccroche|coupe|ne répond pas|me renvoie vers un robot|tourne en rond",
         "au bout de {n} minutes|à chaque fois|systématiquement|"),
        ("ça fait {n} fois que|c'est la {n}e fois que|encore une fois|pour la {n}e fois",
         "j'appelle|je contacte le support|j'écris au service client|je relance",
         "sans résultat|et rien|pour le même problème|"),
        ("aucune réponse|zéro réponse|pas de retour|silence radio|toujours rien",
         "à mes mails|à mes messages|à mes courriers|en mp|au ticket", "{since_when}|"),
        ("le technicien|le tech|l'intervention|le rdv technicien",
         "n'est jamais venu|a été annulé|est reporté|ne s'est pas présenté",
         "{when}|pour la {n}e fois|sans prévenir|"),
        ("impossible|pas moyen|aucun moyen", "de joindre|de parler à|d'avoir",
         "un humain|quelqu'un|un vrai conseiller|une personne compétente"),
        ("on me balade|on me renvoie|je suis baladé",
         "de service en service|d'un conseiller à l'autre|entre le chat et la hotline",
         "{since_when}|"),
    ),
    "offer": (
        ("la Freebox Pop|la Delta|l'Ultra|la box Pop|la Révolution|l'offre Essentiel|la mini 4K",
         "vaut le coup|est intéressante|est mieux|vaut vraiment le prix|est plus rapide|convient",
         "par rapport à|comparée à|face à|plutôt que|à la place de",
         "la Delta|l'Ultra|la Pop|la concurrence|ma vieille box|la box d'Orange|l'offre SFR",
         "pour une famille de {n}|pour du télétravail|pour jouer en ligne|pour la 4K|", "?|??| ?"),
        ("la promo|l'offre|la vente privée|le forfait|la remise|le code promo|l'offre de bienvenue",
         "à {n} euros|à {n}€|série spéciale|fibre|de Noël|étudiante|{n} Go",
         "est encore valable|est dispo|marche|s'applique aux anciens clients|dure combien de temps",
         "{where}|pour moi|jusqu'à quand|", "?"),
        ("je peux|on peut|est-ce que je peux|c'est possible de|j'aimerais",
         "passer au forfait|changer pour le forfait|prendre le forfait|basculer sur|migrer vers",
         "{n} Go|{n} euros|5G|illimité|Pop|avec Netflix",
         "sans frais|sans engagement|en gardant mon numéro|sans changer de box|en ligne|", "?|"),
        ("pourquoi|c'est normal que|comment ça se fait que|expliquez-moi pourquoi",
         "les nouveaux clients|les nouveaux abonnés|ceux qui arrivent|les nouveaux",
         "ont un meilleur prix|payent moins cher|ont des promos|ont la box gratuite|ont plus de data",
         "que nous|que les anciens|que les clients fidèles|alors que je suis là depuis {n} ans|", "?|"),
        ("le forfait|l'offre|la box|l'abonnement|la formule", "{n} euros|Pop|Ultra|fibre|famille",
         "inclut|comprend|donne accès à|propose|permet d'avoir",
         "Netflix|Disney+|les chaînes sport|Canal|Amazon Prime|le replay|la 4K",
         "ou pas ?|?|finalement ?|sans supplément ?"),
    ),
    "praise": (
        ("merci|un grand merci|bravo|respect|chapeau|merci beaucoup|big up",
         "au technicien|à l'équipe|au conseiller|au support|à Léa du support|au gars de l'intervention",
         "passé {when}|de {city}|au téléphone|venu {when}|",
         "tout marche nickel|super boulot|problème réglé|efficace et sympa|rapide et pro|"),
        ("la fibre|la connexion|internet|le réseau|le wifi|la 4G",
         "est enfin arrivée|est revenue|remarche|est top|est au rendez-vous|marche du feu de dieu",
         "{where}", "merci|enfin|depuis {when}|après {n} jours|"),
        ("service client|support|conseiller|chat|hotline|équipe technique",
         "au top|efficace|patient|réactif|très pro|adorable",
         "{when}|au {hotline}|", "problème réglé en {n} minutes|rien à dire|comme quoi ça arrive|"),
        ("la nouvelle|ma nouvelle|cette|la", "Freebox Ultra|box|Pop|Delta|mini 4K",
         "est vraiment rapide|est une tuerie|déchire|envoie du lourd|est super stable|chauffe pas",
         "{since_when}|franchement|je recommande|"),
        ("{n} méga|{n} Mb|{n} mégas|{n} Gb", "en upload|en download|en wifi|en ethernet",
         "bravo|pas mal|impressionnant|la classe|qui dit mieux", "{where}|"),
        ("c'est revenu|ça remarche|tout fonctionne|la ligne est rétablie|le net est revenu",
         "{where}", "merci aux équipes|enfin|ouf|après {n} heures|"),
    ),
    "question": (
        ("comment|comment on fait pour|c'est possible de|quelqu'un sait comment|vous pouvez m'expliquer comment",
         "changer|modifier|récupérer|retrouver|réinitialiser",
         "le mot de passe du wifi|mon code RIO|mon identifiant|le nom du réseau|le code du décodeur|"
         "mon mot de passe espace abonné", "sur la {box_model}|depuis l'appli|", "?|??|svp ?"),
        ("la box|le décodeur|la freebox|le player|la {box_model}", "peut|sait|arrive à",
         "se mettre en mode bridge|enregistrer deux programmes|faire du wifi 6|gérer le contrôle parental|"
         "couper le wifi la nuit|diffuser sur deux télés", "?|ou pas ?|?? merci"),
        ("on peut|je peux|c'est possible de|est-ce qu'on peut",
         "garder son numéro|payer par chèque|avoir une eSIM|suspendre la ligne|changer de RIB|transférer l'abonnement",
         "en passant chez vous|pendant les vacances|à un proche|en ligne|", "?|svp ?"),
        ("quel est le délai|combien de temps|c'est long", "pour le raccordement|pour l'activation|pour la portabilité|"
         "pour recevoir la box|pour un rdv technicien", "{where}|en ce moment|", "?|en moyenne ?"),
        ("vous avez|il y a|où se trouve", "une boutique|un point relais|un technicien|un Free Center",
         "à {city}|près de {city}|vers {city}|dans le coin", "?|svp ?"),
    ),
}
FRAMES_EN: dict[str, tuple[tuple[str, ...], ...]] = {
    "outage": (
        ("my internet|the connection|the fibre|wifi|the broadband|our line|the net",
         "has been down|is down|is not working|keeps failing|is dead|died|is out",
         "{where_en}", "since {when}|again|for {n} hours|all day|"),
        ("no connection|no internet|still no internet|zero internet|no broadband", "{where_en}",
         "since {when}|for {n} days|today either|"),
        ("any update on|what's happening with|is there|anyone else with|any news about",
         "the outage|an outage|a problem|a network issue|the incident", "in {city}|{where_en}", "?|??"),
        ("the box|my router|the modem|the freebox", "keeps blinking|is stuck on|shows|flashes",
         "red|orange|white", "since {when}|again|"),
        ("can't work|can't stream anything|can't do my calls|the kids can't study",
         "because the internet is down|without internet|{where_en}", "since {when}|"),
    ),
    "mobile": (
        ("no signal|no 4G|no data|zero bars|no network", "{where_en}", "since {when}|all day|"),
        ("calls keep dropping|my calls drop|can't make calls|calls cut out", "{where_en}",
         "every time|since {when}|after {n} seconds|"),
        ("mobile data|my phone plan|texting|my SIM", "is not working|stopped working|is blocked",
         "since {when}|again|"),
    ),
    "billing": (
        ("I was charged|you charged me|they took|I got billed", "{n} euros", "twice|too much|for nothing",
         "this month|last week|"),
        ("my bill|the price|my plan|the subscription", "went up by|increased by|jumped by", "{n} euros",
         "without notice|this month|overnight|"),
        ("still waiting for|where is|no sign of", "my refund|the credit you promised|my money back",
         "since {when}|after {n} weeks|"),
        ("why am I paying for|why do you charge me for|who added", "an option|a service|an extra line",
         "I never asked for|I cancelled|nobody ordered", "?"),
    ),
    "service": (
        ("waited|been waiting|spent", "{n} minutes|an hour|{n} hours", "on the phone|on the chat|on hold",
         "and nobody answered|for nothing|to be hung up on|"),
        ("your support|customer service|the hotline|your chat", "never answers|hangs up on me|is useless|"
         "sends me in circles", "every time|again|"),
        ("the technician|the engineer|the appointment", "never showed up|cancelled again|got postponed",
         "{when}|for the {n}th time|"),
        ("impossible to reach|can't get|no way to talk to", "a human|anyone|a real person|someone competent"),
    ),
    "praise": (
        ("thanks to|big thanks to|shout out to|kudos to", "the technician|the support team|the guy on the phone",
         "everything works now|great job|problem solved|"),
        ("great support|fast support|amazing service|helpful hotline", "{when}|",
         "fixed in {n} minutes|all good now|back online|"),
    ),
    "question": (
        ("how do I|how can I|is it possible to|anyone knows how to",
         "change the wifi password|keep my number|get my RIO code|reset the box|cancel my contract",
         "online|from the app|", "?"),
        ("does the box|can the box|will the new box", "support bridge mode|record two shows|do wifi 6|work abroad", "?"),
    ),
}
FILLERS_FR = ("franchement", "sérieux", "bref", "du coup", "en fait", "svp", "merci d'avance",
              "help", "urgent", "bon", "voilà", "encore", "grave", "hello ?", "allô ?", "pfff",
              "bordel", "mdr", "lol", "wesh", "genre", "bizarre", "c'est dingue", "au fait")
FILLERS_EN = ("honestly", "seriously", "anyway", "please", "urgent", "lol", "ugh", "again", "hello?")
WEIGHTS_FR = {"outage": 30, "mobile": 14, "billing": 13, "service": 13, "offer": 8,
              "praise": 10, "question": 8}
CONTEXT_FR = ("je suis en télétravail|je bosse de chez moi|je travaille à la maison|en plein télétravail",
              "mes enfants ont cours en ligne|les gamins ont école à distance|ma fille a un exam en ligne",
              "j'ai une visio dans {n} minutes|j'ai une réunion importante|j'ai un entretien en visio",
              "je suis client depuis {n} ans|abonné depuis {n} ans|fidèle depuis {n} ans",
              "je paye {n} euros par mois|{n} euros par mois pour ça|à {n}€ le mois",
              "le technicien devait passer {when}|j'ai déjà appelé {n} fois|ticket ouvert {when}",
              "mon voisin a le même souci|tout le quartier est touché|toute la rue est coupée|"
              "les voisins aussi",
              "mes parents sont âgés|ma mère dépend du fixe|ma grand-mère vit seule",
              "je suis malade et coincé chez moi|je suis auto-entrepreneur|je viens de déménager",
              "j'ai redémarré la box {n} fois|j'ai tout débranché|j'ai testé en ethernet|"
              "reset fait {n} fois",
              "aucun sms d'info|rien sur le site|aucune communication|pas un mot de votre part",
              "mes voisins chez Orange ont du réseau|chez SFR ça marche|les autres opérateurs marchent",
              "je perds des clients|je rate mes matchs|je perds de l'argent|impossible de regarder la tv")
CONTEXT_EN = ("I work from home|I'm working remotely", "my kids have online classes",
              "I've restarted the router {n} times|tried everything", "customer for {n} years",
              "my neighbours have the same problem|the whole street is affected",
              "nothing on the status page|no communication at all")
FEEL_FR = ("c'est inadmissible|inadmissible|c'est inacceptable|inacceptable",
           "ras le bol|j'en ai marre|marre|j'en peux plus|je craque",
           "c'est une blague ?|vous vous foutez de nous ?|sérieusement ?|c'est une plaisanterie",
           "on paye pour quoi ?|on paye pour rien|on paye plein pot pour ça",
           "je suis dégoûté|vraiment déçu|très déçu|déçue",
           "quelle galère|c'est pénible|c'est lourd|usant",
           "merci de faire le nécessaire|faites quelque chose|bougez-vous|réagissez",
           "je vais finir par résilier|je change d'opérateur|je résilie|bye bye",
           "la honte|pas sérieux|amateurs|c'est n'importe quoi",
           "super...|génial...|trop bien...|bravo...")
FEEL_EN = ("this is unacceptable|unacceptable", "so frustrating|frustrating|annoying",
           "not happy at all|very disappointed", "fix it please|sort it out|do something",
           "what a joke|ridiculous|seriously?")
# Per-author writing habits: abbreviations and typos make two people's renderings of the
# same frame differ, as real people's do.
ABBREV_FR = {"toujours": "tjrs", "pour": "pr", "dans": "ds", "depuis": "dp", "je suis": "jsuis",
             "c'est": "c", "quand": "qd", "beaucoup": "bcp", "aujourd'hui": "auj",
             "quelqu'un": "qqn", "il y a": "ya", "rendez-vous": "rdv", "maintenant": "mtn",
             "message": "msg", "téléphone": "tel", "vraiment": "vrmt", "je ne peux pas": "jpeux pas",
             "problème": "pb", "minutes": "min", "ce matin": "ce mat", "pas": "pa", "très": "tres",
             "que": "ke", "quoi": "koi"}
ABBREV_EN = {"you": "u", "are": "r", "please": "pls", "because": "bc", "minutes": "mins",
             "for": "4", "to": "2", "with": "w/", "nothing": "nothin", "internet": "net"}
HOTLINES = ("3244", "1044", "service client", "support", "numéro d'assistance")
SHORT_GENERIC = ("{m} merci !", "merci {m}", "{m} nul", "{m} toujours rien...", "{m} ???",
                 "{m} 👍", "{m} 😡😡", "enfin ! merci {m}", "{m} c'est revenu", "{m} ça remarche",
                 "{m} toujours rien", "{m} une réponse ?", "{m} allo ?", "{m} nul à chier",
                 "{m} vous êtes où ?", "{m} au top", "{m} de pire en pire", "{m} super merci",
                 "{m} ça marche pas", "{m} c'est long", "{m} help", "{m} no internet again",
                 "{m} thanks!", "{m} any news?")
OFFTOPIC_FRAMES = (
    ("le match|le concert|le film|la série|l'expo|le spectacle",
     "de ce soir|d'hier soir|de samedi|de la semaine dernière|au Zénith",
     "va être incroyable|était dingue|m'a déçu|vaut le détour|était trop long|c'est du lourd",
     "{where}|franchement|entre potes|avec les enfants|"),
    ("il fait|quel temps|il pleut|il neige|canicule", "magnifique|pourri|de fou|des cordes|",
     "à {city}|ici|sur la côte|", "aujourd'hui|ce matin|depuis {n} jours|", "😎|☔|"),
    ("free hugs|dégustation gratuite|entrée free|concert free|atelier gratuit",
     "au marché|au parc|à la médiathèque|place de la mairie|au festival", "de {city}|", "ce matin|samedi|ce soir|"),
    ("enfin vendredi|vivement le week-end|lundi déjà|encore une réunion|pause café",
     "bon week-end à tous|qui vient boire un verre|la réunion de {h}h aurait pu être un mail|"
     "j'en suis à mon {n}e café|courage à tous", "😅|☕|"),
    ("best pizza|free parking|great coffee|nice walk", "in {city}|downtown|near the station",
     "this weekend|today|no contest|", "nice|love it|"),
)
CLOSINGS_FR = ("merci d'avance|bonne journée|cordialement|svp|merci|bonne soirée|bisous|merci bcp|"
               "hâte d'avoir une réponse|bon courage")
CLOSINGS_EN = "thanks in advance|cheers|thanks|have a nice day|please"
CONTEXT_ASK_FR = ("je viens de déménager|on vient d'emménager|nouveau client ici|je compare les offres",
                  "c'est pour ma mère|c'est pour mon fils|pour le bureau|pour la maison de campagne",
                  "je suis chez Orange pour l'instant|j'hésite à changer|un ami m'a conseillé Free")

# Campaign seeds: copy-pasted texts, each clearly distinct; most are long militant texts,
# every fifth one a short slogan (6-9 words), where one edit weighs much more.
CAMPAIGN_SEEDS = (
    "Ça fait 5 jours que tout le quartier de la Guillotière à Lyon est sans fibre, 300 foyers privés d'internet et personne ne nous répond. Rétablissez la connexion maintenant !",
    'Nous, habitants de Pessac, exigeons le remboursement intégral des 2 semaines de coupure internet. Partagez pour que Free nous entende enfin !',
    'STOP aux hausses de prix cachées : +3 euros sur la facture sans aucune explication. On ne se laissera pas faire, signez la pétition et relayez !',
    'Free = arnaque, partagez un max ! #boycottFree',
    "Depuis 10 jours impossible de télétravailler à Marseille nord, la box est morte et le support raconte n'importe quoi. Combien de temps encore ?",
    'Le technicien devait venir le 12, puis le 18, puis le 25. Toujours personne. Voilà comment Free traite ses clients fidèles depuis 8 ans.',
    'Alerte : de faux SMS au nom de Free demandent vos coordonnées bancaires pour un remboursement. Ne cliquez sur aucun lien et signalez-les au 33700 !',
    "Free, vous avez coupé la 4G dans tout le village de Saint-Jean pendant 3 jours et vous osez nous prélever le mois complet ? Un geste commercial s'impose.",
    'Rendez-nous la fibre à Lyon ! #RendezNousLaFibre',
    "Jeu concours : tentez de gagner une Freebox Ultra et 6 mois d'abonnement offerts ! Pour participer, suivez le compte et retweetez ce message avant dimanche.",
    "Les personnes âgées de notre résidence n'ont plus de téléphone fixe depuis 4 jours. En cas d'urgence elles ne peuvent appeler personne. C'est grave, réagissez !",
    "Rendez-nous notre débit : on paye la fibre 1 Gb et on plafonne à 20 Mb tous les soirs depuis septembre. Publicité mensongère, nous saisissons l'UFC.",
    'Help: internet has been down across the whole Bordeaux Chartrons area for 3 days, hundreds of homes offline and customer service keeps hanging up on us.',
    '3 jours sans internet à Pessac, merci qui ? #FreeDown',
    'Boycott: never sign up with this operator, 6 months of outages, 14 calls to support, zero solution and they still charge full price every single month.',
    'Message aux équipes de Free : merci pour le rétablissement rapide de la fibre à Rennes après la tempête, les techniciens ont travaillé toute la nuit, respect !',
    "Pétition pour l'installation d'une antenne dans la vallée : 2000 habitants sans réseau mobile correct en 2026, on signe et on partage massivement.",
    "Attention arnaque à l'abonnement : des options payantes ajoutées sans consentement sur des centaines de lignes. Vérifiez vos factures des 6 derniers mois !",
    "Je résilie aujourd'hui, bye bye Free 👋 #boycottFree",
    'Cela fait 3 semaines que la ligne de ma grand-mère de 92 ans est coupée à Limoges. Elle vit seule. Aidez-nous à faire bouger les choses, partagez !',
    "Free mobile : le forfait à 2 euros devient 5 euros sans prévenir. Multiplier le prix par 2,5 ce n'est pas une petite hausse, c'est du vol organisé.",
    "Grève du SAV ou abandon pur et simple ? 48 heures d'attente pour un simple chat en ligne et aucune réponse sur les réseaux. Qui s'occupe des clients ?",
    'Our small business in Nice lost two full days of orders because the fibre went down and nobody could give us a repair date. Compensation now.',
    'Mobilisation samedi 14h devant la boutique Free de Toulouse Capitole pour réclamer le retour de la fibre dans le quartier Bonnefoy. Venez nombreux !',
    'Remboursez les abonnés de Marseille nord ! #FreeDown',
    "Les étudiants de la cité universitaire de Villeneuve-d'Ascq n'ont plus internet depuis la rentrée. Comment réviser les partiels sans connexion ?",
    "Free a encore changé les conditions de son offre sans prévenir : la TV n'est plus incluse et il faut payer 8 euros de plus. Lisez bien vos mails !",
    'Free ne répond plus, on fait quoi ? #SAV',
    'Panne géante chez Free ce soir ? Tout le Grand Est semble touché, box éteinte, mobile sans data. Signalez votre ville en réponse pour faire une carte.',
    'Thank you Free for sponsoring the youth football tournament in Caen this weekend, 40 teams and great spirits all around. Community matters!',
)
SYNONYMS = {
    "fibre": "connexion", "connexion": "fibre", "internet": "le net", "quartier": "secteur",
    "personne": "aucun conseiller", "maintenant": "tout de suite", "exigeons": "réclamons",
    "remboursement": "dédommagement", "coupure": "panne", "explication": "justification",
    "impossible": "pas possible", "box": "freebox", "toujours": "encore", "clients": "abonnés",
    "prélever": "facturer", "partagez": "diffusez", "relayez": "partagez", "grave": "dangereux",
    "massivement": "un max", "arnaque": "escroquerie", "vol": "racket", "réponse": "retour",
    "down": "out", "hundreds": "loads", "offline": "disconnected", "outages": "breakdowns",
    "homes": "households", "never": "don't ever", "great": "amazing", "respect": "bravo",
    "semaines": "sem.", "jours": "jrs", "heures": "h", "gagner": "remporter",
    "résilie": "quitte", "remboursez": "indemnisez", "répond": "réagit", "quoi": "comment",
    "abonnés": "clients", "merci": "grâce à", "rendez": "redonnez",
    "prévenir": "avertir", "nombreux": "en masse", "seule": "toute seule", "signez": "signez vite",
}
CAMPAIGN_HASHTAGS = ("#FreeDown", "#boycottFree", "#StopArnaque", "#RendezNousLaFibre",
                     "#SAV", "#panne", "#colère", "#Free", "#pétition", "#RT")
UNSEEN_POSTS = (
    "Incident en cours sur le réseau fibre dans la région lyonnaise : nos équipes sont mobilisées, rétablissement estimé en fin de journée. Merci de votre patience.",
    "Nouvelle offre Freebox Pop : fibre jusqu'à 5 Gb/s, Wi-Fi 7 et 250 chaînes TV à 29,99 euros par mois la première année. Disponible dès aujourd'hui.",
    "URGENT - Une panne géante touche plusieurs opérateurs dans le sud-est, des milliers de foyers sans internet depuis midi selon nos informations.",
    "Le service est rétabli à Bordeaux. Si votre box n'est pas encore synchronisée, redémarrez-la. Toutes nos excuses pour la gêne occasionnée.",
    "Our teams are working to restore mobile service in the affected areas. Follow updates on the network status page.",
    "Rappel : Free ne vous demandera jamais vos coordonnées bancaires par SMS. En cas de doute, contactez le 3244.",
    "Les résultats du baromètre de la qualité des réseaux mobiles sont tombés : découvrez le classement des opérateurs ville par ville.",
    "Maintenance programmée cette nuit entre 2h et 5h dans les Hauts-de-France, de courtes coupures sont possibles.",
)


# --------------------------------------------------------------------------- generation

def _pick(rng: random.Random, slot: str) -> str:
    return rng.choice(slot.split("|"))


def _fill(rng: random.Random, template: str, lang: str) -> str:
    def sub(m: re.Match) -> str:
        key = m.group(1)
        if key == "m":
            return rng.choice(MENTIONS_FR)
        if key == "n":
            return str(rng.choice((2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30, 45, 50, 100)))
        if key == "h":
            return str(rng.randint(6, 23))
        if key == "mm":
            return rng.choice(("00", "15", "30", "45"))
        if key == "city":
            return rng.choice(HOT_CITIES if rng.random() < 0.5 else CITIES)
        if key == "where":
            r = rng.random()
            city = rng.choice(HOT_CITIES if rng.random() < 0.5 else CITIES)
            if r < 0.3:
                return f"à {city}"
            if r < 0.4:
                return rng.choice(("sur", "vers", "du côté de", "secteur", "ici à")) + f" {city}"
            if r < 0.55:
                return rng.choice(("dans", "sur", "vers")) + f" {rng.choice(DISTRICTS)}"
            if r < 0.65:
                return f"à {city} {rng.choice(DISTRICTS)}"
            if r < 0.8:
                return rng.choice(("chez moi", "à la maison", "chez nous", "au bureau", "ici",
                                   "dans le coin", "dans mon village"))
            return ""
        if key == "where_en":
            return rng.choice(("in " + rng.choice(CITIES), "at home", "in my area", "here", ""))
        if key == "when":
            return _fill(rng, rng.choice(WHEN_FR if lang == "fr" else WHEN_EN), lang)
        if key == "since_when":
            return _pick(rng, SINCE_FR) + " " + _fill(rng, rng.choice(WHEN_FR), lang)
        if key == "hotline":
            return rng.choice(HOTLINES)
        if key == "box_model":
            return rng.choice(("Pop", "Delta", "Ultra", "Révolution", "mini 4K", "box"))
        raise KeyError(key)
    return re.sub(r"\s+", " ", re.sub(r"\{(\w+)\}", sub, template)).strip()


def _style(rng: random.Random, text: str, lang: str) -> str:
    """One author's habits: abbreviations, typos, dropped accents, case."""
    abbrev = ABBREV_FR if lang == "fr" else ABBREV_EN
    p_abbrev = rng.choice((0.0, 0.0, 0.3, 0.6, 0.9))
    if p_abbrev:
        for full, short in abbrev.items():
            if rng.random() < p_abbrev:
                text = re.sub(r"(?<![\w'])" + re.escape(full) + r"(?![\w'])", short, text)
    p_typo = rng.choice((0.0, 0.0, 0.03, 0.06, 0.1))
    if p_typo:
        words = text.split(" ")
        for i, w in enumerate(words):
            if len(w) > 3 and w.isalpha() and rng.random() < p_typo:
                j = rng.randrange(1, len(w) - 1)
                words[i] = w[:j] + w[j + 1:] if rng.random() < 0.5 else \
                    w[:j - 1] + w[j] + w[j - 1] + w[j + 1:]
        text = " ".join(words)
    r = rng.random()
    if r < 0.1:
        text = text.lower()
    elif r < 0.13:
        text = text.upper()
    return text


def _join(rng: random.Random, parts: list[str]) -> str:
    out = ""
    for p in parts:
        if not p:
            continue
        if not out:
            out = p
            continue
        sep = rng.choice((", ", ". ", " ", " - ", "... ", " ! ", ". ", ", "))
        if out[-1] in "?!.,:":
            sep = " "
        if sep.strip() in (".", "!", "...") and p[0].isalpha():
            p = p[0].upper() + p[1:]
        out += sep + p
    return out


def _frame(rng: random.Random, frame: tuple[str, ...], lang: str) -> tuple[str, tuple[int, ...]]:
    """A frame's text and the wording chosen in each slot."""
    choices = tuple(rng.randrange(len(slot.split("|"))) for slot in frame)
    text = " ".join(slot.split("|")[c] for slot, c in zip(frame, choices))
    return _fill(rng, text, lang), choices


def _normal_text(rng: random.Random) -> tuple[str, tuple | None]:
    """An independent tweet and its *structure* (frames and wordings chosen; None for
    short generic texts, which may repeat)."""
    r = rng.random()
    if r < 0.05:
        return _fill(rng, rng.choice(SHORT_GENERIC), "fr"), None
    lang = "en" if r < 0.17 else "fr"
    if r < 0.08:
        topic = "offtopic"
        frames, contexts, feelings, openers = OFFTOPIC_FRAMES, (), (), ("",)
    elif lang == "fr":
        topic = rng.choices(list(WEIGHTS_FR), weights=list(WEIGHTS_FR.values()))[0]
        frames, contexts, feelings, openers = FRAMES_FR[topic], CONTEXT_FR, FEEL_FR, OPENERS_FR
    else:
        topic = rng.choice(list(FRAMES_EN))
        frames, contexts, feelings, openers = FRAMES_EN[topic], CONTEXT_EN, FEEL_EN, OPENERS_EN
    parts = [_fill(rng, rng.choice(openers), lang)]
    structure: list = [lang, topic]
    n_frames = rng.choices((1, 2), weights=(55, 45))[0]
    for i in rng.sample(range(len(frames)), n_frames):
        text, choices = _frame(rng, frames[i], lang)
        parts.append(text)
        structure.append((i, choices))
    complaint = topic in ("outage", "mobile", "billing", "service")
    if contexts and rng.random() < (0.55 if complaint else 0.35):
        ctx = rng.choice(contexts) if complaint or lang == "en" else rng.choice(CONTEXT_ASK_FR)
        parts.insert(rng.randint(2, len(parts)), _fill(rng, _pick(rng, ctx), lang))
    if complaint and rng.random() < 0.5:
        parts.append(_pick(rng, rng.choice(feelings)))
    elif not complaint and topic != "offtopic" and rng.random() < 0.5:
        parts.append(_pick(rng, CLOSINGS_FR if lang == "fr" else CLOSINGS_EN))
    if rng.random() < 0.4:   # an interjection somewhere, as people write
        fillers = FILLERS_FR if lang == "fr" else FILLERS_EN
        parts.insert(rng.randint(1, len(parts)), rng.choice(fillers))
    text = _style(rng, _join(rng, parts), lang)
    if rng.random() < 0.3:
        text += rng.choice(("", " ", " ")) + "".join(
            rng.choice(POS_EMOJIS if topic == "praise" else EMOJIS) for _ in range(rng.randint(1, 3)))
    if rng.random() < 0.15:
        text += " " + rng.choice(HASHTAGS)
    return text, tuple(structure)


def _signature(text: str) -> str:
    """The generator's own crude identity test: letters only, lowercased, no accents."""
    text = re.sub(r"@\w+|https?://\S+", " ", text.lower())
    text = re.sub("[\u0300-\u036f]", "", unicodedata.normalize("NFKD", text))
    return " ".join(re.findall(r"[a-z]+", text))


EDITS = ("mention", "emoji", "hashtag", "synonym", "punct", "case", "number", "url", "elongate")


def _edit(rng: random.Random, text: str, op: str) -> str:
    """One light edit of a copy (a link, when appended, comes last: nobody edits it)."""
    if op == "mention":
        handle = rng.choice(("@free", "@Freebox", "@FreeMobile", "@Free_1337", "@xavierniel",
                             "@UFCQueChoisir", "@Arcep", "@BFMTV", "@franceinfo",
                             f"@{rng.choice(('julie', 'max', 'nico', 'sarah', 'lucas'))}{rng.randint(1, 999)}"))
        if text.startswith("@"):
            return handle + text[text.find(" "):]
        return f"{handle} {text}" if rng.random() < 0.7 else f"{text} {handle}"
    if op == "emoji":
        found = [m for m in re.finditer(r"[\U0001F300-\U0001FAFF\u2600-\u27BF]", text)]
        if found and rng.random() < 0.5:
            m = rng.choice(found)
            return (text[:m.start()] + text[m.end():]).strip()
        e = rng.choice(EMOJIS)
        return f"{text} {e}" if rng.random() < 0.8 else f"{e} {text}"
    if op == "hashtag":
        tags = re.findall(r"#\w+", text)
        if tags and rng.random() < 0.5:
            return re.sub(r"\s*" + re.escape(rng.choice(tags)) + r"\b", "", text, count=1).strip()
        return f"{text} {rng.choice(CAMPAIGN_HASHTAGS)}"
    if op == "synonym":
        words = [w for w in re.findall(r"\w+", text) if w.lower() in SYNONYMS]
        if words:
            w = rng.choice(words)
            return re.sub(r"\b" + re.escape(w) + r"\b", SYNONYMS[w.lower()], text, count=1)
        return _edit(rng, text, rng.choice(EDITS[:7]))
    if op == "punct":
        choice = rng.random()
        if choice < 0.3:
            return re.sub(r"[,;:]", "", text)
        if choice < 0.6:
            return re.sub(r"[!.]\s*$", "", text) + rng.choice((" !!!", "!!", " ?!", "..."))
        return text.replace(" : ", " - ").replace(", ", " ").replace(". ", " ... ")
    if op == "case":
        choice = rng.random()
        if choice < 0.4:
            return text.lower()
        if choice < 0.6:
            return text.upper()
        words = text.split(" ")
        i = rng.randrange(len(words))
        words[i] = words[i].upper()
        return " ".join(words)
    if op == "number":
        nums = list(re.finditer(r"\d+", text))
        if nums:
            m = rng.choice(nums)
            return text[:m.start()] + str(int(m.group()) + rng.randint(1, 9)) + text[m.end():]
        return _edit(rng, text, rng.choice(EDITS[:7]))
    if op == "url":
        code = "".join(rng.choice("abcdefghijkmnpqrstuvwxyzABCDEFGH0123456789") for _ in range(10))
        return f"{text} https://t.co/{code}"
    # elongate a word: a vowel repeated
    words = text.split(" ")
    idx = [i for i, w in enumerate(words) if re.search(r"[aeiouy]", w) and w.isalpha()]
    if not idx:
        return _edit(rng, text, rng.choice(EDITS[:7]))
    i = rng.choice(idx)
    w = words[i]
    j = max(k for k, c in enumerate(w) if c in "aeiouy")
    words[i] = w[:j] + w[j] * rng.randint(3, 6) + w[j + 1:]
    return " ".join(words)


def _retweet_text(author: str, text: str) -> str:
    full = f"RT @{author}: {text}"
    return full if len(full) <= 140 else full[:139].rstrip() + "…"


def _handle(rng: random.Random) -> str:
    return rng.choice(("julie", "max", "nico", "sarah", "lucas", "camille", "tom", "ines",
                       "leo", "emma", "hugo", "chloe", "kev", "lea", "yanis")) + \
        rng.choice(("", "_", "")) + str(rng.randint(1, 9999))


def generate_flood(n_normal: int = 20_000, n_campaigns: int = 20, copies_per_campaign: int = 250,
                   n_retweets: int = 1000, n_replayed: int = 200, seed: int = 11) -> list[FloodTweet]:
    """The labelled flood, in arrival order (see the module docstring)."""
    if not 0 <= n_campaigns <= len(CAMPAIGN_SEEDS):
        raise ValueError(f"n_campaigns must be between 0 and {len(CAMPAIGN_SEEDS)} (distinct seeds)")
    rng = random.Random(seed)
    # one dict per tweet: t (event time), text, rt, kind, family (campaign) or None,
    # author (for the "RT @author:" of its retweets), arrival, id, truth
    items: list[dict] = []
    seen_signatures: set[str] = set()
    seen_structures: set[tuple] = set()
    for _ in range(n_normal):
        while True:
            text, structure = _normal_text(rng)
            sig = _signature(text)
            if structure is None or (len(sig.split()) < 5 or sig not in seen_signatures) \
                    and structure not in seen_structures:
                break
        seen_signatures.add(sig)
        seen_structures.add(structure)
        items.append({"t": START + rng.random() * DURATION, "text": text, "rt": False,
                      "kind": "original", "family": None, "author": _handle(rng)})

    for c in range(n_campaigns):
        base = f"{rng.choice(MENTIONS_FR)} {CAMPAIGN_SEEDS[c]}"
        t0 = START + rng.random() * DURATION * 0.6
        family = f"campaign-{c}"
        items.append({"t": t0, "text": base, "rt": False, "kind": "original",
                      "family": family, "root": True, "author": _handle(rng)})
        burst = rng.uniform(300, 3600)      # most copies come in a burst, the rest trail
        for _ in range(copies_per_campaign):
            delay = rng.expovariate(1 / burst) if rng.random() < 0.8 else \
                rng.random() * (START + DURATION - t0)
            text = base
            ops = [rng.choice(EDITS) for _ in range(rng.choices((1, 2, 3), weights=(45, 35, 20))[0])]
            for op in sorted(ops, key=lambda op: op == "url"):
                text = _edit(rng, text, op)
            items.append({"t": min(t0 + 1 + delay, START + DURATION), "text": text, "rt": False,
                          "kind": "near_duplicate", "family": family, "author": _handle(rng)})

    # Arrival order: event time + a delivery lag; a copy never arrives before its seed.
    seeds = {it["family"]: it for it in items if it.get("root")}
    for it in items:
        it["arrival"] = it["t"] + rng.expovariate(1 / 2.0)
    for it in items:
        if it["kind"] == "near_duplicate":
            it["arrival"] = max(it["arrival"], seeds[it["family"]]["arrival"] + 0.001)
    items.sort(key=lambda it: it["arrival"])

    n_unseen = n_retweets // 10
    retweets = []
    for _ in range(n_retweets - n_unseen):
        target = rng.choice(items)
        while target["family"] is None and len(_signature(target["text"]).split()) < 5 \
                and rng.random() < 0.9:   # people rarely retweet "merci @free"
            target = rng.choice(items)
        t = target["t"] + rng.expovariate(1 / 900.0) + 1
        if t > START + DURATION:
            t = target["t"] + rng.random() * (START + DURATION - target["t"]) + 1
        retweets.append({"t": t, "text": _retweet_text(target["author"], target["text"]), "rt": True,
                         "kind": "retweet", "target": target, "family": None, "author": _handle(rng),
                         "arrival": max(t + rng.expovariate(1 / 2.0), target["arrival"] + 0.001)})
    unseen_authors = ("free", "Freebox", "BFMTV", "franceinfo", "Free_1337", "FreeMobile",
                      "lesechos", "Arcep")
    for _ in range(n_unseen):
        i = rng.randrange(len(UNSEEN_POSTS))
        t = START + rng.random() * DURATION
        retweets.append({"t": t, "text": _retweet_text(unseen_authors[i], UNSEEN_POSTS[i]), "rt": True,
                         "kind": "retweet", "target": None, "unseen": i, "family": None,
                         "author": _handle(rng), "arrival": t + rng.expovariate(1 / 2.0)})
    items.extend(retweets)
    items.sort(key=lambda it: it["arrival"])

    # Ids: snowflake-like, increasing with event time, unique.
    order = sorted(range(len(items)), key=lambda i: items[i]["t"])
    for rank, i in enumerate(order):
        items[i]["id"] = str(2_031_000_000_000_000_000 + rank * 7919 + rng.randrange(7919))

    # Truth, in arrival order: every copy's family original (its seed, the tweet it
    # retweets or that tweet's own original, the first retweet of an unseen post).
    family_root = {family: it["id"] for family, it in seeds.items()}
    unseen_root: dict[int, str] = {}
    root_of: dict[int, str] = {}         # id(item) -> id of its family's original
    for it in items:
        if it["kind"] == "original":
            it["truth"] = ""
            root_of[id(it)] = it["id"]
        elif it["kind"] == "near_duplicate":
            it["truth"] = root_of[id(it)] = family_root[it["family"]]
        elif it["target"] is None:
            root = unseen_root.setdefault(it["unseen"], it["id"])
            it["truth"] = "" if root == it["id"] else root
        else:
            it["truth"] = root_of[id(it["target"])]   # the target arrived before

    out = [FloodTweet(it["id"], it["text"], round(it["t"], 3), it["rt"], it["truth"], it["kind"])
           for it in items]

    # Exact replays: an earlier tweet sent again 1 s - 20 min later.
    arrivals = [it["arrival"] for it in items]
    replays: list[tuple[float, FloodTweet]] = []
    for _ in range(n_replayed):
        i = rng.randrange(len(items))
        src = out[i]
        replays.append((arrivals[i] + rng.uniform(1, 1200),
                        FloodTweet(src.id, src.text, src.event_time, src.is_retweet, src.id, "exact")))
    merged = [(a, k, tw) for k, (a, tw) in enumerate(zip(arrivals, out))]
    merged += [(a, len(out) + k, tw) for k, (a, tw) in enumerate(replays)]
    merged.sort(key=lambda x: (x[0], x[1]))
    return [tw for _, _, tw in merged]


# --------------------------------------------------------------------------- scoring

def score(tweets: Sequence[FloodTweet], decisions: Sequence) -> dict:
    """Precision/recall of duplicate detection against the truth (see the docstring)."""
    if len(tweets) != len(decisions):
        raise ValueError("one decision per tweet")
    tp = fp = fn = 0
    per_kind: dict[str, Counter] = {k: Counter() for k in KINDS}
    confusion: Counter = Counter()
    for tw, d in zip(tweets, decisions):
        truth_pos = tw.truth_original != ""
        pred_pos = d.duplicate_of != ""
        confusion[(tw.truth_kind, d.kind)] += 1
        c = per_kind[tw.truth_kind]
        c["n"] += 1
        if truth_pos:
            c["duplicates"] += 1
        if pred_pos and d.duplicate_of == tw.truth_original:
            tp += 1
            c["found"] += 1
        else:
            if pred_pos:
                fp += 1
                c["false_positive"] += 1
            if truth_pos:
                fn += 1
                c["missed"] += 1
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "tweets": len(tweets), "duplicates": tp + fn, "predicted_duplicates": tp + fp,
        "true_positives": tp, "false_positives": fp, "false_negatives": fn,
        "dedup_precision": round(precision, 5), "dedup_recall": round(recall, 5), "f1": round(f1, 5),
        "per_kind": {k: dict(v) for k, v in per_kind.items()},
        "predicted_kinds": dict(Counter(d.kind for d in decisions)),
        "confusion": {f"{a}->{b}": n for (a, b), n in sorted(confusion.items())},
    }


# --------------------------------------------------------------------------- bench

# Detector variants measured by ``python -m bench.clean_flood`` (class attributes of
# ``Deduplicator`` overridden); the first one is the shipped default.
VARIANTS: dict[str, dict] = {
    "word1+2 24x4 (default)": {},
    "word1+2 all unigrams": {"SHINGLES": "word12all"},
    "word2 24x4": {"SHINGLES": "word2"},
    "char5 24x4": {"SHINGLES": "char5"},
    "word1+2 14x3": {"BANDS": 14, "ROWS": 3},
}


def run_detector(tweets: Sequence[FloodTweet], detector) -> tuple[list, float]:
    """Decisions of ``detector`` on ``tweets`` and the CPU seconds ``check`` took."""
    import time
    check = detector.check
    rows = [(t.id, t.text, t.event_time, t.is_retweet) for t in tweets]
    start = time.process_time()
    decisions = [check(*row) for row in rows]
    return decisions, time.process_time() - start


def bench(variants: dict[str, dict] | None = None, repeat: int = 3, say=print) -> dict:
    """Precision/recall/throughput of each variant on the default flood, plus the
    default's steady-state throughput (short horizon and capacity: constant eviction)."""
    import platform
    import tracemalloc
    from stream_app.clean.dedup import Deduplicator

    tweets = generate_flood()
    out: dict = {"flood": {"tweets": len(tweets), **Counter(t.truth_kind for t in tweets)},
                 "python": platform.python_version(), "machine": platform.machine(),
                 "variants": {}}
    for name, attrs in (variants or VARIANTS).items():
        cls = type("Variant", (Deduplicator,), attrs)
        best = None
        for _ in range(repeat):
            decisions, cpu = run_detector(tweets, cls())
            best = cpu if best is None else min(best, cpu)
        s = score(tweets, decisions)
        row = {k: s[k] for k in ("dedup_precision", "dedup_recall", "f1", "false_positives",
                                 "false_negatives")}
        row["recall_by_kind"] = {k: round(v.get("found", 0) / v["duplicates"], 4)
                                 for k, v in s["per_kind"].items() if v.get("duplicates")}
        row["tweets_per_s"] = round(len(tweets) / best)
        out["variants"][name] = row
        say(f"{name:24s} P={row['dedup_precision']:.4f} R={row['dedup_recall']:.4f} "
            f"F1={row['f1']:.4f} {row['tweets_per_s']:>6d} tweets/s  {row['recall_by_kind']}")

    steady = min(run_detector(tweets, Deduplicator(horizon_s=1800, capacity=5000))[1]
                 for _ in range(repeat))
    out["steady_state_tweets_per_s"] = round(len(tweets) / steady)
    tracemalloc.start()
    d = Deduplicator()
    run_detector(tweets, d)
    out["retained_bytes_per_stored_tweet"] = round(tracemalloc.get_traced_memory()[0] / len(d))
    tracemalloc.stop()
    out["index_after_flood"] = d.index_stats()
    say(f"steady state (horizon 30 min, capacity 5,000): {out['steady_state_tweets_per_s']} tweets/s; "
        f"memory ~{out['retained_bytes_per_stored_tweet']} B per stored tweet")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import json
    parser = argparse.ArgumentParser(description="Benchmark the clean stage's duplicate detector.")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per variant (best kept)")
    args = parser.parse_args(argv)
    result = bench(repeat=args.repeat)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
