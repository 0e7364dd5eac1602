"""The password policy: judges a new or changed password, never alters it.

Requirements followed (shared/SECURITY-CHECKLIST.md):

- NIST SP 800-63B rev. 4 §3.1.1.2: 15 characters when the password is the only factor, 8 when it is
  one of two; at least 64 accepted; every Unicode code point counts as one character; no other
  composition rules; the whole password is verified, never truncated; a blocklist of common,
  expected or compromised values, and when a password is refused the subscriber is told why and
  given guidance.
- OWASP ASVS 5.0 V6.2: 6.2.1 (length), 6.2.4 and 6.2.12 (common and breached passwords), 6.2.5
  (composition rules off by default), 6.2.8 (verified exactly as received), 6.2.9 (64+ characters),
  6.1.2 and 6.2.11 (context-specific words).

``PasswordPolicy.check`` only raises ``PasswordRejected`` or returns; the caller hashes exactly the
string it was given. Normalisation (NFKC, case folding) is used for *judging* only, so that
"password" typed in fullwidth or mixed-case letters is recognised as "password" without the stored
credential depending on it.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from pathlib import Path
from typing import Any, Literal

from zxcvbn import zxcvbn
from zxcvbn.frequency_lists import FREQUENCY_LISTS

from idp.config import PasswordPolicySettings

__all__ = ["PasswordPolicy", "PasswordRejected", "Rule"]

Rule = Literal["too_short", "too_long", "common", "context", "personal", "weak", "character_classes", "invalid"]

# zxcvbn's cost grows with the input's length; scoring the first 100 characters bounds the work per
# request while every password that long is already far beyond any guessing attack. The length and
# blocklist rules still see the whole password (NIST §3.1.1.2: never truncate).
STRENGTH_SCORED_CHARACTERS = 100

# Email local parts, name parts and context words shorter than this are ignored: two letters
# ("al", "li") occur inside too many good passphrases to refuse on sight.
MIN_PERSONAL_LENGTH = 3

# NFKC composes at most four code points into one (U+1FAF, a Greek capital with three marks: checked
# over all of Unicode), so a raw string longer than four times max_length cannot normalise to
# max_length or fewer: refuse it before normalising an arbitrarily large input.
_MAX_NFKC_SHRINK = 4

_CHARACTER_CLASSES = ("lower", "upper", "digit", "other")
_NAME_SEPARATORS = re.compile(r"[\W_]+")


class PasswordRejected(ValueError):
    """A password the policy refuses: ``rule`` is a stable id for code, ``message`` is for the user.

    The message says why and what to do instead (NIST §3.1.1.2: the subscriber is told the reason
    and offered guidance); it never repeats the password, so it is safe to log.
    """

    def __init__(self, rule: Rule, message: str) -> None:
        super().__init__(message)
        self.rule: Rule = rule
        self.message = message


class PasswordPolicy:
    """Checks passwords against ``settings.password_policy``; cheap to build, safe to share."""

    def __init__(self, settings: PasswordPolicySettings) -> None:
        self._settings = settings
        self._blocklist = _load_blocklist(settings.blocklist_file)
        self._context_words = tuple(
            dict.fromkeys(
                folded for word in settings.context_words if len(folded := _fold(word)) >= MIN_PERSONAL_LENGTH
            )
        )

    def check(
        self,
        password: str,
        *,
        email: str | None = None,
        name: str | None = None,
        has_second_factor: bool = False,
    ) -> None:
        """Raise ``PasswordRejected`` for the first rule the password breaks; return None otherwise.

        Rules, in order: invalid characters, length, common passwords, personal information,
        context words, character classes (only if configured), estimated strength (if configured).
        An input too long to be worth normalising is refused as ``too_long`` before anything else.
        """
        settings = self._settings
        if len(password) > settings.max_length * _MAX_NFKC_SHRINK:
            raise self._too_long()
        self._check_characters(password)
        normalised = unicodedata.normalize("NFKC", password)
        # NIST §3.1.1.2: each Unicode code point is one character; counted after NFKC so that a
        # decomposed "é" (e + U+0301) counts once, as the user sees it.
        length = len(normalised)
        minimum = settings.min_length_with_mfa if has_second_factor else settings.min_length
        if length < minimum:
            raise PasswordRejected(
                "too_short",
                f"Use at least {minimum} characters. A few unrelated words make a long password that is "
                "easy to remember.",
            )
        if length > settings.max_length:
            raise self._too_long()

        folded = _fold(normalised)
        # NIST §3.1.1.2 / ASVS 6.2.4, 6.2.12: compare against commonly used and compromised values.
        # Exact match only; repeated or sequential variants ("passwordpassword") are zxcvbn's job.
        if folded in self._blocklist:
            raise PasswordRejected(
                "common",
                "This password is on a list of commonly used or leaked passwords, so it is among the first "
                "an attacker tries. Choose a different one, for example a few unrelated words.",
            )

        # NIST §3.1.1.2 lists the user's own details among "expected" values; ASVS 6.1.2 / 6.2.11 the
        # service's context words. Substring match, case-insensitive, after the same normalisation.
        if any(part in folded for part in _personal_parts(email, name)):
            raise PasswordRejected(
                "personal",
                "Your password must not contain your email address or your name, which others may know. "
                "Choose something unrelated to you.",
            )
        for word in self._context_words:
            if word in folded:
                raise PasswordRejected(
                    "context",
                    f'Your password must not contain "{word}", a word associated with this service. '
                    "Choose something unrelated to it.",
                )

        # NIST §3.1.1.2 and ASVS 6.2.5 forbid composition rules; they exist only for deployments whose
        # own regulation demands them, and are off (0) unless configured.
        required = settings.required_character_classes
        if required and len(_character_classes(normalised)) < required:
            raise PasswordRejected(
                "character_classes",
                f"Use at least {required} of these kinds of character: lowercase letters, uppercase letters, "
                "digits, other symbols (spaces count as symbols).",
            )

        if settings.min_strength:
            self._check_strength(normalised, email, name)

    def describe(self) -> dict[str, Any]:
        """The policy as JSON-able data, so forms can check a password before submitting it.

        Keys are stable. Lengths count Unicode code points after NFKC normalisation (in JavaScript:
        ``[...value.normalize("NFKC")].length``). ``character_classes`` is empty unless composition
        rules are configured. The blocklist itself is not published.
        """
        settings = self._settings
        return {
            "min_length": settings.min_length,
            "min_length_with_mfa": settings.min_length_with_mfa,
            "max_length": settings.max_length,
            "length_unit": "unicode_code_points_nfkc",
            "min_strength": settings.min_strength,
            "strength_estimator": "zxcvbn" if settings.min_strength else None,
            "required_character_classes": settings.required_character_classes,
            "character_classes": list(_CHARACTER_CLASSES) if settings.required_character_classes else [],
            "blocklist": "Common and leaked passwords are refused.",
            "context": {
                "personal": "Passwords containing your email address or name are refused.",
                "words": list(self._context_words),
                "min_part_length": MIN_PERSONAL_LENGTH,
            },
        }

    def _check_characters(self, password: str) -> None:
        # Control characters (Cc) cannot be typed reliably and are a sign of a mangled submission;
        # lone surrogates (Cs) are not characters at all and cannot be encoded for hashing.
        if any(unicodedata.category(char) in ("Cc", "Cs") for char in password):
            raise PasswordRejected(
                "invalid",
                "Your password contains a control character (such as a tab or line break) that cannot be "
                "used. Remove it and try again.",
            )

    def _too_long(self) -> PasswordRejected:
        return PasswordRejected(
            "too_long",
            f"Use at most {self._settings.max_length} characters.",
        )

    def _check_strength(self, normalised: str, email: str | None, name: str | None) -> None:
        inputs = [*_strength_inputs(email, name), *self._context_words]
        scored = normalised[:STRENGTH_SCORED_CHARACTERS]
        result = zxcvbn(scored, user_inputs=inputs, max_length=STRENGTH_SCORED_CHARACTERS)
        if int(result["score"]) >= self._settings.min_strength:
            return
        feedback = result.get("feedback") or {}
        advice = [str(feedback.get("warning") or ""), *(str(item) for item in feedback.get("suggestions") or ())]
        advice = [item for item in advice if item]
        if not advice:
            advice = ["Add another word or two. Uncommon words are better."]
        raise PasswordRejected("weak", "This password is too easy to guess. " + " ".join(advice))


@functools.lru_cache(maxsize=8)
def _load_blocklist(path: str) -> frozenset[str]:
    """zxcvbn's 30,000 common passwords plus the operator's file, folded like the candidate.

    Cached per path: the lists are immutable data, loaded once however many policies are built. A
    changed file is read again only after a restart.
    """
    entries = {_fold(word) for word in FREQUENCY_LISTS["passwords"]}
    if path:
        entries |= _read_blocklist_file(Path(path))
    return frozenset(entries)


def _read_blocklist_file(path: Path) -> set[str]:
    # One password per line, UTF-8; lines are taken exactly (only the line ending is removed), as a
    # leading "#" or a space can be part of a password.
    prefix = f"password_policy.blocklist_file: {path}"
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            return {_fold(line) for raw in handle if (line := raw.rstrip("\r\n"))}
    except FileNotFoundError:
        raise ValueError(f"{prefix}: not found") from None
    except IsADirectoryError:
        raise ValueError(f"{prefix}: is a directory") from None
    except PermissionError:
        raise ValueError(f"{prefix}: not readable (permission denied)") from None
    except UnicodeDecodeError:
        raise ValueError(f"{prefix}: not valid UTF-8") from None
    except OSError as exc:
        raise ValueError(f"{prefix}: cannot be read ({exc.strerror or exc})") from None


def _fold(value: str) -> str:
    """NFKC with case folding, for comparisons only (never for what is hashed)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold())


def _personal_parts(email: str | None, name: str | None) -> list[str]:
    parts: list[str] = []
    if email:
        folded_email = _fold(email)
        parts.append(folded_email)
        local = folded_email.rpartition("@")[0]
        if len(local) >= MIN_PERSONAL_LENGTH:
            parts.append(local)
    if name:
        parts.extend(part for part in _NAME_SEPARATORS.split(_fold(name)) if len(part) >= MIN_PERSONAL_LENGTH)
    return parts


def _strength_inputs(email: str | None, name: str | None) -> list[str]:
    # zxcvbn lowers the score of passwords built from these; the local part's pieces ("jane", "doe"
    # in jane.doe@…) are penalised here rather than refused outright, which would catch short words.
    inputs = _personal_parts(email, name)
    if email:
        local = _fold(email).rpartition("@")[0]
        inputs.extend(part for part in _NAME_SEPARATORS.split(local) if part)
    if name:
        inputs.extend(part for part in _NAME_SEPARATORS.split(_fold(name)) if part)
    return list(dict.fromkeys(inputs))


def _character_classes(password: str) -> set[str]:
    found: set[str] = set()
    for char in password:
        if char.islower():
            found.add("lower")
        elif char.isupper():
            found.add("upper")
        elif char.isdigit():
            found.add("digit")
        else:
            # Caseless letters (CJK, Arabic…), spaces and punctuation count as "other".
            found.add("other")
    return found
