"""Write ess-norway.csv: a SYNTHETIC survey shaped like a Norwegian European Social Survey round
(docs/surveys-outside-us.md), for the worked example. No real respondent is in it: every answer is
drawn from a seeded model in which one left-right leaning drives vote, attitudes and trust, so the
answers correlate as real ones do. It is written as Norwegian exports often are: semicolon-separated,
decimal commas, Windows-1252 text.

    python examples/norway/make_data.py          # rewrites examples/norway/ess-norway.csv
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

RESPONDENTS = 160
SEED = 2024
REGIONS = ("Oslo og Viken", "Innlandet", "Agder og Sør-Østlandet", "Vestlandet", "Trøndelag", "Nord-Norge")
REGION_SHARES = (0.36, 0.07, 0.18, 0.25, 0.09, 0.05)
# Party codes 1..9, 10 another party, 11 would not vote; each party's place on the left (-) right (+) scale.
PARTY_LEANING = (-0.6, 0.9, 1.4, 0.1, -1.1, 0.3, 0.6, -1.5, -0.9)
DOMICILE = 5  # 1 a big city ... 5 a farm or home in the countryside


def _five(rng: np.random.Generator, score: np.ndarray) -> np.ndarray:
    """Answers 1..5 from a latent score: an ordered-logit draw around the middle."""
    cuts = np.array([-1.5, -0.5, 0.5, 1.5])
    noisy = score + rng.logistic(size=score.shape) * 0.7
    return 1 + (noisy[:, None] > cuts[None, :]).sum(axis=1)


def rows(seed: int = SEED, n: int = RESPONDENTS) -> list[dict[str, str]]:
    """The synthetic respondents, as the CSV's cells."""
    rng = np.random.default_rng(seed)
    age = np.clip(rng.gamma(3.5, 10.0, n) + 15, 15, 90).astype(int)
    gender = rng.choice([1, 2], n)
    education = rng.choice(np.arange(1, 8), n, p=[0.05, 0.15, 0.2, 0.1, 0.05, 0.25, 0.2])
    leaning = rng.normal(0.0, 1.0, n) + 0.15 * (education < 4) - 0.2 * (education > 5)
    income = np.clip(np.round(5.5 + 2.5 * rng.normal(size=n) + 0.3 * (education - 4)), 1, 10).astype(int)
    closeness = -np.abs(leaning[:, None] - np.array(PARTY_LEANING)[None, :])
    party = 1 + np.argmax(closeness + rng.gumbel(size=closeness.shape) * 0.6, axis=1)
    party = np.where(rng.random(n) < 0.08, 11, np.where(rng.random(n) < 0.04, 10, party))
    citizen = np.where(rng.random(n) < 0.92, 1, 2)
    answers = {
        "trstprl": _five(rng, 0.8 - 0.2 * np.abs(leaning)),
        "imwbcnt": _five(rng, -0.9 * leaning + 0.2),
        "gincdif": _five(rng, 0.9 * leaning - 0.6),  # 1 agree strongly ... 5 disagree strongly
        "freehms": _five(rng, 0.5 * leaning - 1.2),
        "stfdem": _five(rng, 0.9 - 0.25 * np.abs(leaning)),
    }
    for values in answers.values():  # a few refusals (7) and don't knows (8)
        values[rng.random(n) < 0.03] = 8
        values[rng.random(n) < 0.01] = 7
    income[rng.random(n) < 0.06] = 88
    weight = np.round(rng.uniform(0.6, 1.5, n), 2)
    out = []
    for i in range(n):
        out.append(
            {
                "idno": str(10001 + i),
                "pspwght": f"{weight[i]:.2f}".replace(".", ","),
                "agea": str(age[i]),
                "gndr": str(gender[i]),
                "eisced": str(education[i]),
                "hinctnta": str(income[i]),
                "region": REGIONS[rng.choice(len(REGIONS), p=REGION_SHARES)],
                "prtvtno": str(party[i]),
                "ctzcntr": str(citizen[i]),
                "domicil": str(rng.integers(1, DOMICILE + 1)),
                **{q: str(v[i]) for q, v in answers.items()},
            }
        )
    return out


def write(path: Path) -> Path:
    table = rows()
    with path.open("w", encoding="cp1252", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]), delimiter=";")
        writer.writeheader()
        writer.writerows(table)
    return path


if __name__ == "__main__":
    print(write(Path(__file__).with_name("ess-norway.csv")))
