"""Language codes and detection for ad records (the project handles Chinese and English)."""

from __future__ import annotations

SUPPORTED_LANGUAGES = ("zh", "en")

_ALIASES = {
    "zh": "zh", "zh-cn": "zh", "zh_cn": "zh", "zh-hans": "zh", "cn": "zh", "chinese": "zh",
    "en": "en", "en-us": "en", "en_us": "en", "en-gb": "en", "en_gb": "en", "english": "en",
}


def normalize_language(value: str) -> str | None:
    """Map a user-given language tag to 'zh' / 'en'; None when the tag is unknown."""
    return _ALIASES.get(value.strip().lower())


def is_cjk(ch: str) -> bool:
    """True for CJK unified ideographs (incl. extension A and compatibility ideographs)."""
    cp = ord(ch)
    return 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0xF900 <= cp <= 0xFAFF


def detect_language(text: str) -> str:
    """'zh' when CJK ideographs make up at least 20% of the letters of ``text``, else 'en'.

    A 20% threshold keeps Chinese ads that quote Latin brand names or units ("iPhone 15",
    "0.5-1kg") Chinese, while an English ad with one Chinese word stays English.
    """
    cjk = sum(1 for ch in text if is_cjk(ch))
    latin = sum(1 for ch in text if ch.isascii() and ch.isalpha())
    if cjk == 0:
        return "en"
    return "zh" if cjk / (cjk + latin) >= 0.2 else "en"
