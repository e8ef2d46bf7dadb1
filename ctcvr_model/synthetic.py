"""A small synthetic CTCVR table with a known signal, for tests, benchmarks and smoke runs.

It is not the project's simulator (``data_prep.simulate_logs``); it exists so that this package can
be tested on its own. Each impression pairs a query with one of several ad variants of the same
advertiser; the truth is logistic in two visible properties:

* the title repeats the query            -> clicks (and, weakly, conversions) are more likely;
* the description quotes a selling point -> conversions after a click are more likely.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_TOPICS = [
    ("cheap flights to tokyo", "tokyo flights", ["round trip from $399", "free seat selection", "24/7 support"]),
    ("learn spanish online", "spanish lessons", ["native tutors", "first lesson free", "flexible schedule"]),
    ("teeth whitening near me", "teeth whitening", ["one hour treatment", "certified dentists", "from $99"]),
    ("car insurance quote", "auto insurance", ["save up to 30%", "claims in 48 hours", "no paperwork"]),
    ("weight loss program", "diet plan", ["personal nutritionist", "21 day cycles", "daily check-ins"]),
    ("home cleaning service", "house cleaning", ["vetted cleaners", "book in 60 seconds", "satisfaction promise"]),
    ("python programming course", "coding bootcamp", ["project based", "job support", "12 week program"]),
    ("dog grooming salon", "pet grooming", ["gentle handlers", "same day booking", "organic shampoo"]),
    ("used cars for sale", "second hand cars", ["150 point inspection", "7 day returns", "finance available"]),
    ("wedding photographer", "wedding photos", ["full day coverage", "edited album", "drone shots"]),
    ("hair loss treatment", "hair regrowth", ["clinically tested", "free scalp check", "results in 90 days"]),
    ("accounting software small business", "bookkeeping app", ["free 30 day trial", "bank sync", "tax reports"]),
]
_GENERIC_TITLES = ["Great deals for you", "Discover something new today", "Quality service you can trust"]
_GENERIC_DESCS = ["We are here to help with everything you need.", "Trusted by many customers across the country."]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def make_table(n_impressions: int = 4000, seed: int = 0, n_variants: int = 6, split: str = "train") -> pd.DataFrame:
    """A CTCVR table (see ctcvr_model.schema) of ``n_impressions`` per-impression rows with truth columns."""
    rng = np.random.default_rng(seed)
    ads = []
    for t, (query, bidword, points) in enumerate(_TOPICS):
        for v in range(n_variants):
            relevant = v % 2 == 0
            quotes = (v // 2) % 2 == 0
            title = (f"{query.title()} - offer {v}" if relevant else f"{_GENERIC_TITLES[v % 3]} #{v}")
            desc = (f"{points[v % len(points)].capitalize()}. Variant {v} for {bidword}." if quotes
                    else f"{_GENERIC_DESCS[v % 2]} Variant {v}.")
            ads.append(dict(record_id=f"syn-{t:02d}-{v}", query=query, bidword=bidword, selling_points=list(points),
                            title=title, description=desc, industry=f"topic{t}", language="en",
                            relevant=relevant, quotes=quotes))
    pick = rng.integers(0, len(ads), size=n_impressions)
    rel = np.array([ads[i]["relevant"] for i in pick], dtype=float)
    quo = np.array([ads[i]["quotes"] for i in pick], dtype=float)
    p_click = _sigmoid(-2.2 + 1.6 * rel + 0.2 * quo)
    p_cvr = _sigmoid(-1.8 + 1.8 * quo + 0.3 * rel)
    click = (rng.random(n_impressions) < p_click).astype(int)
    conversion = click * (rng.random(n_impressions) < p_cvr).astype(int)
    rows = []
    for j, i in enumerate(pick):
        a = {k: v for k, v in ads[i].items() if k not in ("relevant", "quotes")}
        rows.append({**a, "click": int(click[j]), "conversion": int(conversion[j]), "weight": 1.0, "split": split,
                     "truth_p_click": float(p_click[j]), "truth_p_cvr": float(p_cvr[j]),
                     "truth_p_ctcvr": float(p_click[j] * p_cvr[j])})
    return pd.DataFrame(rows)


def make_items(n: int, seed: int = 0) -> list[dict]:
    """``n`` scoring items (query, bidword, selling_points, title, description), mostly distinct texts."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        query, bidword, points = _TOPICS[int(rng.integers(len(_TOPICS)))]
        k = int(rng.integers(len(points)))
        items.append({
            "query": f"{query} {i % 97}",
            "bidword": bidword,
            "selling_points": list(points),
            "title": f"{query.title()} offer number {i}",
            "description": f"{points[k].capitalize()}. Book today, option {i} for {bidword}.",
        })
    return items
