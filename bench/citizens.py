"""A synthetic purpose-specific task: route citizens' requests (English and French) to one of five
public-service departments, answering in a fixed JSON format.

Written for Alizé's benchmarks and tests (licence: the project's own, Apache-2.0). Requests are
built from templates and fillers; the held-out split uses templates *and* fillers that never
appear in training, so a right answer there means the model learned the routing, not the
sentences. Deterministic: the same call always returns the same examples.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

DEPARTMENTS = ("civil_status", "taxes", "transport", "housing", "health")
SYSTEM = (
    "You route citizens' requests to one public-service department. Answer with JSON only, "
    'exactly {"department": "<name>"}, where <name> is one of: civil_status, taxes, transport, '
    "housing, health."
)

# per department and language: templates with a {x} slot, and fillers for it
TEMPLATES: dict[str, dict[str, tuple[list[str], list[str]]]] = {
    "civil_status": {
        "en": (
            [
                "I need a copy of my {x}.",
                "How do I get a {x} for my daughter?",
                "Where can I request a {x}?",
                "My {x} has a spelling mistake, who can correct it?",
                "I lost my {x}, what should I do?",
                "Can I order a {x} online?",
                "We want to register a {x} at the town hall.",
                "Please send me an extract of my {x}.",
                "What documents do I need for a {x}?",
                "How long does it take to obtain a {x}?",
            ],
            [
                "birth certificate",
                "marriage certificate",
                "death certificate",
                "civil partnership",
                "name change",
                "family record book",
                "certificate of residence",
                "birth registration",
            ],
        ),
        "fr": (
            [
                "J'ai besoin d'une copie de mon {x}.",
                "Comment obtenir un {x} pour ma fille ?",
                "Où puis-je demander un {x} ?",
                "Mon {x} comporte une faute, qui peut la corriger ?",
                "J'ai perdu mon {x}, que dois-je faire ?",
                "Puis-je commander un {x} en ligne ?",
                "Nous voulons déclarer un {x} à la mairie.",
                "Merci de m'envoyer un extrait de mon {x}.",
                "Quels documents faut-il pour un {x} ?",
                "Combien de temps faut-il pour obtenir un {x} ?",
            ],
            [
                "acte de naissance",
                "acte de mariage",
                "acte de décès",
                "PACS",
                "changement de nom",
                "livret de famille",
                "certificat de résidence",
                "enregistrement de naissance",
            ],
        ),
    },
    "taxes": {
        "en": (
            [
                "I have a question about my {x}.",
                "How do I pay my {x} in instalments?",
                "I think my {x} was calculated wrongly.",
                "When is the deadline for the {x}?",
                "I did not receive my {x} notice this year.",
                "Can I get a refund on my {x}?",
                "How do I declare my {x} online?",
                "I was charged twice for the {x}.",
                "Who can explain the amount of my {x}?",
                "I need a certificate that my {x} is paid.",
            ],
            [
                "income tax",
                "property tax",
                "council tax",
                "VAT return",
                "tax return",
                "housing tax",
                "tax assessment",
                "self-employed contributions",
            ],
        ),
        "fr": (
            [
                "J'ai une question sur mon {x}.",
                "Comment payer mon {x} en plusieurs fois ?",
                "Je pense que mon {x} est mal calculé.",
                "Quelle est la date limite pour le {x} ?",
                "Je n'ai pas reçu mon avis de {x} cette année.",
                "Puis-je être remboursé de mon {x} ?",
                "Comment déclarer mon {x} en ligne ?",
                "On m'a prélevé deux fois le {x}.",
                "Qui peut m'expliquer le montant de mon {x} ?",
                "J'ai besoin d'une attestation de paiement de mon {x}.",
            ],
            [
                "impôt sur le revenu",
                "impôt foncier",
                "taxe d'habitation",
                "déclaration de TVA",
                "avis d'imposition",
                "prélèvement à la source",
                "impôt local",
                "taxe foncière",
            ],
        ),
    },
    "transport": {
        "en": (
            [
                "How do I renew my {x}?",
                "I want to apply for a {x}.",
                "My {x} was stolen yesterday.",
                "What is the price of a {x}?",
                "Can I change the address on my {x}?",
                "I received a fine about my {x}.",
                "Where do I take the test for a {x}?",
                "My {x} expires next month.",
                "How do I transfer a {x} to a new owner?",
                "Is there a discount on the {x} for students?",
            ],
            [
                "driving licence",
                "vehicle registration",
                "bus pass",
                "parking permit",
                "car registration",
                "motorcycle licence",
                "monthly train pass",
                "disabled parking badge",
            ],
        ),
        "fr": (
            [
                "Comment renouveler mon {x} ?",
                "Je veux demander un {x}.",
                "On m'a volé mon {x} hier.",
                "Quel est le prix d'un {x} ?",
                "Puis-je changer l'adresse sur mon {x} ?",
                "J'ai reçu une amende concernant mon {x}.",
                "Où passer l'examen pour un {x} ?",
                "Mon {x} expire le mois prochain.",
                "Comment transférer un {x} à un nouveau propriétaire ?",
                "Y a-t-il une réduction sur le {x} pour les étudiants ?",
            ],
            [
                "permis de conduire",
                "certificat d'immatriculation",
                "abonnement de bus",
                "permis de stationnement",
                "carte grise",
                "permis moto",
                "abonnement de train",
                "macaron de stationnement",
            ],
        ),
    },
    "housing": {
        "en": (
            [
                "I am looking for {x}.",
                "How do I apply for {x}?",
                "My landlord refuses to fix the {x}.",
                "Am I eligible for {x}?",
                "There is a problem with the {x} in my building.",
                "I need help paying my {x}.",
                "Who do I contact about {x}?",
                "We are being evicted, can we get {x}?",
                "How long is the waiting list for {x}?",
                "I want to report {x} in my flat.",
            ],
            [
                "social housing",
                "a housing allowance",
                "heating",
                "emergency shelter",
                "rent",
                "mould",
                "a rent deposit guarantee",
                "a council flat",
            ],
        ),
        "fr": (
            [
                "Je cherche {x}.",
                "Comment faire une demande de {x} ?",
                "Mon propriétaire refuse de réparer le {x}.",
                "Ai-je droit à {x} ?",
                "Il y a un problème de {x} dans mon immeuble.",
                "J'ai besoin d'aide pour payer mon {x}.",
                "Qui contacter au sujet de {x} ?",
                "Nous sommes expulsés, pouvons-nous obtenir {x} ?",
                "Quelle est l'attente pour {x} ?",
                "Je veux signaler {x} dans mon appartement.",
            ],
            [
                "un logement social",
                "une aide au logement",
                "chauffage",
                "un hébergement d'urgence",
                "loyer",
                "moisissure",
                "une garantie de loyer",
                "un HLM",
            ],
        ),
    },
    "health": {
        "en": (
            [
                "How do I get a {x}?",
                "I need to update my {x}.",
                "Is the {x} free for children?",
                "Where can I get a {x} near me?",
                "My {x} was refused, why?",
                "How do I get reimbursed for a {x}?",
                "I lost my {x}.",
                "Can I book a {x} online?",
                "What does the {x} cover?",
                "My mother needs a {x} at home.",
            ],
            [
                "health insurance card",
                "flu vaccination",
                "medical check-up",
                "GP appointment",
                "prescription refund",
                "European health card",
                "dental check-up",
                "nurse visit",
            ],
        ),
        "fr": (
            [
                "Comment obtenir une {x} ?",
                "Je dois mettre à jour ma {x}.",
                "La {x} est-elle gratuite pour les enfants ?",
                "Où faire une {x} près de chez moi ?",
                "Ma {x} a été refusée, pourquoi ?",
                "Comment être remboursé d'une {x} ?",
                "J'ai perdu ma {x}.",
                "Puis-je prendre une {x} en ligne ?",
                "Que couvre la {x} ?",
                "Ma mère a besoin d'une {x} à domicile.",
            ],
            [
                "carte Vitale",
                "vaccination contre la grippe",
                "visite médicale",
                "consultation chez le médecin",
                "ordonnance",
                "carte européenne d'assurance maladie",
                "visite chez le dentiste",
                "visite d'infirmière",
            ],
        ),
    },
}
#: templates and fillers from these indices on are held out (never in training)
HELD_TEMPLATES, HELD_FILLERS = 8, 6


def answer(department: str) -> str:
    return json.dumps({"department": department})


def _pairs(held_out: bool) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    for department, by_lang in TEMPLATES.items():
        for language, (templates, fillers) in by_lang.items():
            ts = templates[HELD_TEMPLATES:] if held_out else templates[:HELD_TEMPLATES]
            fs = fillers[HELD_FILLERS:] if held_out else fillers[:HELD_FILLERS]
            for template, filler in itertools.product(ts, fs):
                out.append((template.format(x=filler), department, language))
    return out


def examples(split: str, *, limit: int | None = None, seed: int = 0) -> list[tuple[str, str, str]]:
    """``(request, department, language)`` for ``split`` in ``train`` or ``held_out``, shuffled."""
    pairs = _pairs(split == "held_out")
    random.Random(seed).shuffle(pairs)
    return pairs[:limit] if limit is not None else pairs


def chat_line(request: str, department: str) -> dict[str, object]:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": request},
            {"role": "assistant", "content": answer(department)},
        ]
    }


def write_jsonl(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    path.write_text("".join(json.dumps(chat_line(r, d), ensure_ascii=False) + "\n" for r, d, _ in rows))
    return path


def parse_department(text: str) -> str | None:
    """The department a reply names, if it is exactly the fixed JSON format (else None)."""
    try:
        value = json.loads(text.strip())
    except ValueError:
        return None
    if isinstance(value, dict) and set(value) == {"department"} and value["department"] in DEPARTMENTS:
        return str(value["department"])
    return None
