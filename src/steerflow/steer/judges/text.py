"""Text preparation for the sentiment judges: WikiText clean-up and SST-2's tokenisation.

Generated WikiText-style text is cleaned first (:func:`clean_generated_text`): ``<unk>`` and
``<|endoftext|>`` are dropped and ``@-@``, ``@,@``, ``@.@`` markers are joined back. The
classifier then sees the text tokenised the way SST-2 was (:func:`ptb_tokenize`, Penn Treebank
style), so generated and training text share one vocabulary.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from steerflow.errors import InputError

_SPECIAL_TOKENS = re.compile(r"<unk>|<\|endoftext\|>")
_WIKITEXT_MARKER = re.compile(r" *@([-.,])@ *")  # "well @-@ known" -> "well-known"


def _clean_lines(joined: str) -> str:
    """WikiText clean-up of newline-separated texts that are already single-spaced."""
    return _WIKITEXT_MARKER.sub(r"\1", _SPECIAL_TOKENS.sub(" ", joined))


def clean_generated_text(text: str) -> str:
    """Undo WikiText-2 tokenisation artefacts in generated text and collapse whitespace.

    Drops ``<unk>`` and ``<|endoftext|>``; ``a @-@ b`` → ``a-b``, ``1 @,@ 000`` → ``1,000``,
    ``3 @.@ 5`` → ``3.5``.
    """
    return " ".join(_clean_lines(" ".join(text.split())).split())


# Each rule starts with a literal character so that the regex engine can skip ahead quickly;
# the rules run once over all texts joined by newlines (hence re.M for ^ and $).
_PTB_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.M), r)
    for p, r in (
        (r'^"', " `` "),
        (r'"(?<=[\s(\[{<]")', " `` "),
        (r'"', " '' "),
        (r"\.\.\.|…", " ... "),
        (r"--+|—|–", " -- "),
        (r"[;:!?()\[\]{}$]", r" \g<0> "),
        (r",(?:(?<!\d,)|(?!\d))", " , "),
        (r"n't(?<=\wn't)\b", " n't"),
        (r"'(?<=\w')(s|re|ve|ll|d|m)\b", r" '\1"),
        (r"'(?<=\w')(?= |$)", " ' "),
        (r"'(?<!\S')(?!(?:s|re|ve|ll|d|m|em|til|n)\b)(?=[a-z])", " ` "),
    )
)
_ABBREVIATIONS = frozenset(
    {"mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "jr.", "sr.", "no.", "etc.", "inc."}
)
_INITIALS = re.compile(r"(?:[a-z]\.)+")


def _split_final_period(token: str) -> list[str]:
    """Split a sentence-final period off ``token`` unless it is an abbreviation or initials."""
    if len(token) < 2 or not token.endswith(".") or token == "...":
        return [token]
    if token in _ABBREVIATIONS or _INITIALS.fullmatch(token):
        return [token]
    return [token[:-1], "."]


def _ptb_lines(joined: str) -> list[list[str]]:
    """PTB-tokenise newline-separated, single-spaced texts (one token list per line)."""
    joined = joined.lower()
    for pattern, replacement in _PTB_RULES:
        joined = pattern.sub(replacement, joined)
    return [
        [part for token in line.split() for part in _split_final_period(token)]
        for line in joined.split("\n")
    ]


def ptb_tokenize(text: str) -> list[str]:
    """Lower-case and tokenise ``text`` the way SST-2 was tokenised (Penn Treebank style).

    Splits off punctuation and the clitics ``n't``, ``'s``, ``'re``, ``'ve``, ``'ll``, ``'d``,
    ``'m`` (``"can't"`` → ``ca n't``); keeps hyphenated words, ``and/or`` and abbreviations such as
    ``mr.`` whole. Already tokenised SST-2 text comes back unchanged (99.8% of SST-2 dev).
    """
    return _ptb_lines(" ".join(text.split()))[0]


def prepare_for_classifier(texts: Sequence[str]) -> list[list[str]]:
    """:func:`clean_generated_text` then :func:`ptb_tokenize` for each text, in one batched pass."""
    joined = "\n".join(" ".join(t.split()) for t in texts)
    return _ptb_lines(_clean_lines(joined)) if texts else []


def as_text_list(texts: Sequence[str]) -> list[str]:
    """Validate ``texts`` as a sequence of strings (a bare string is rejected) and return a list."""
    if isinstance(texts, str):
        raise InputError(
            "texts must be a sequence of strings, not a single string; wrap it in a list"
        )
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise InputError(f"texts[{i}] is {type(text).__name__}, expected str")
    return out
