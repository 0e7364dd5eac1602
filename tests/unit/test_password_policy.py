"""Password policy: NIST SP 800-63B §3.1.1.2 and ASVS 5.0 V6.2, each refusal by its exact rule id."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from zxcvbn.frequency_lists import FREQUENCY_LISTS

from idp.accounts import password_policy
from idp.accounts.password_policy import PasswordPolicy, PasswordRejected
from idp.config import PasswordPolicySettings

STRONG = "lantern quietly orbits marmalade"


def policy(**overrides: Any) -> PasswordPolicy:
    return PasswordPolicy(PasswordPolicySettings(**overrides))


def rule_of(policy_: PasswordPolicy, password: str, **kwargs: Any) -> str:
    with pytest.raises(PasswordRejected) as info:
        policy_.check(password, **kwargs)
    return info.value.rule


def accepts(policy_: PasswordPolicy, password: str, **kwargs: Any) -> None:
    check: Callable[..., object] = policy_.check
    assert check(password, **kwargs) is None


# --- length (NIST §3.1.1.2, ASVS 6.2.1, 6.2.9) --------------------------------------------------------


def test_single_factor_minimum_is_15() -> None:
    plain = policy(min_strength=0)
    assert rule_of(plain, "qz" * 7) == "too_short"  # 14
    accepts(plain, "qz" * 7 + "q")  # 15


def test_second_factor_allows_8() -> None:
    plain = policy(min_strength=0)
    accepts(plain, "qzvbnkwj", has_second_factor=True)
    assert rule_of(plain, "qzvbnkw", has_second_factor=True) == "too_short"
    assert rule_of(plain, "qzvbnkwj") == "too_short"


def test_64_character_passphrase_accepted() -> None:
    phrase = "purple walrus juggles seventeen lanterns beneath a quiet harbour!"[:64]
    assert len(phrase) == 64
    accepts(policy(), phrase)


def test_longer_than_max_length_is_too_long() -> None:
    plain = policy(min_strength=0)
    accepts(plain, "x" * 128)
    assert rule_of(plain, "x" * 129) == "too_long"


def test_huge_input_is_too_long() -> None:
    assert rule_of(policy(), "x" * 1_000_000) == "too_long"


def test_length_limit_counts_normalised_characters_even_when_fully_decomposed() -> None:
    # U+1FAF decomposes into four code points, the most NFKC ever composes back into one.
    letter = unicodedata.normalize("NFD", "\u1faf")
    assert len(letter) == 4
    plain = policy(min_strength=0)
    accepts(plain, letter * 128)
    assert rule_of(plain, letter * 129) == "too_long"


def test_message_states_the_limit_and_never_the_password() -> None:
    with pytest.raises(PasswordRejected) as info:
        policy().check("hunter2", email="a@example.com")
    assert isinstance(info.value, ValueError)
    assert str(info.value) == info.value.message
    assert "15" in info.value.message
    assert "hunter2" not in info.value.message


# --- Unicode ------------------------------------------------------------------------------------------


def test_unicode_counted_per_code_point() -> None:
    password = "éàüñøçßåœ😀🎉🔑ÆÐÞ"
    assert len(password) == 15
    accepts(policy(), password)
    assert rule_of(policy(), password[:14]) == "too_short"


def test_combining_sequences_are_normalised_before_counting() -> None:
    composed = "áéíóúñçâêîôûàèì"  # 15 precomposed letters
    decomposed = unicodedata.normalize("NFD", composed)
    assert len(decomposed) == 30
    plain = policy(min_strength=0)
    accepts(plain, decomposed)
    # 14 letters typed as 28 code points are still 14 characters
    assert rule_of(plain, unicodedata.normalize("NFD", composed[:14])) == "too_short"


@pytest.mark.parametrize("char", ["\x00", "\t", "\n", "\r", "\x1b", "\x7f", "\x85"])
def test_control_characters_are_invalid(char: str) -> None:
    assert rule_of(policy(), f"{STRONG}{char}more words") == "invalid"


def test_lone_surrogate_is_invalid() -> None:
    assert rule_of(policy(), STRONG + "\ud800") == "invalid"


# --- blocklist (NIST §3.1.1.2, ASVS 6.2.4, 6.2.12) ------------------------------------------------------


def long_common_password() -> str:
    return next(word for word in FREQUENCY_LISTS["passwords"] if len(word) >= 15)


@pytest.mark.parametrize("password", ["password", "12345678", "qwertyuiop", "iloveyou"])
def test_common_passwords_refused(password: str) -> None:
    assert rule_of(policy(), password, has_second_factor=True) == "common"


def test_common_password_long_enough_for_single_factor_refused() -> None:
    word = long_common_password()
    assert rule_of(policy(min_strength=0), word) == "common"


def test_blocklist_is_case_insensitive_and_nfkc() -> None:
    assert rule_of(policy(), long_common_password().upper()) == "common"
    assert rule_of(policy(), "PassWord", has_second_factor=True) == "common"
    fullwidth = "\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44"  # "password" in fullwidth letters
    assert rule_of(policy(), fullwidth, has_second_factor=True) == "common"


def test_repeated_common_word_is_left_to_the_strength_estimate() -> None:
    # Not on the list verbatim (exact match only); zxcvbn recognises the repeat.
    assert "passwordpassword" not in FREQUENCY_LISTS["passwords"]
    assert rule_of(policy(), "passwordpassword") == "weak"


def test_extra_blocklist_file_honoured(tmp_path: Path) -> None:
    path = tmp_path / "breached.txt"
    path.write_text("Tangerine Submarine 1987\r\n\nzebra crossing at midnight\n", encoding="utf-8")
    extra = policy(blocklist_file=str(path))
    assert rule_of(extra, "tangerine submarine 1987") == "common"
    assert rule_of(extra, "Zebra Crossing At Midnight") == "common"
    assert rule_of(extra, "password", has_second_factor=True) == "common"  # the shipped list still applies
    accepts(policy(), "tangerine submarine 1987")


def test_missing_blocklist_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"password_policy\.blocklist_file: .*not found"):
        policy(blocklist_file=str(tmp_path / "absent.txt"))


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda path: path.mkdir(), "is a directory"),
        (lambda path: path.write_bytes(b"\xff\xfe\xfa not utf-8\n"), "not valid UTF-8"),
    ],
)
def test_unreadable_blocklist_file_names_the_setting(tmp_path: Path, make: Any, problem: str) -> None:
    path = tmp_path / "list"
    make(path)
    with pytest.raises(ValueError, match=rf"password_policy\.blocklist_file: .*{problem}"):
        policy(blocklist_file=str(path))


def test_blocklist_loaded_once_per_path(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("one two three four five\n")
    first = policy(blocklist_file=str(path))
    path.write_text("")
    second = policy(blocklist_file=str(path))
    assert rule_of(second, "one two three four five") == "common"
    assert rule_of(first, "one two three four five") == "common"


# --- personal information and context words (NIST §3.1.1.2, ASVS 6.1.2, 6.2.11) ----------------------


def test_email_local_part_is_personal() -> None:
    assert rule_of(policy(), "margaret.hamilton rocks the moon", email="Margaret.Hamilton@example.com") == "personal"


def test_whole_email_is_personal_even_with_short_local_part() -> None:
    assert rule_of(policy(), "my login is xy@example.org ok", email="xy@example.org") == "personal"
    accepts(policy(), "fixy wombats example orbit dance", email="xy@example.org")


@pytest.mark.parametrize("password", ["lovelace analytical engine notes", "an ADA-inspired glowing lighthouse"])
def test_name_parts_are_personal(password: str) -> None:
    assert rule_of(policy(), password, name="Ada Lovelace") == "personal"


def test_name_parts_shorter_than_three_are_ignored() -> None:
    accepts(policy(), "alpine lichen drifts sideways", name="Al Li")


def test_context_word_refused() -> None:
    assert rule_of(policy(), "my own idp passphrase is here") == "context"
    assert rule_of(policy(), "My OpenID Password For Work Stuff") == "context"


def test_context_words_are_configurable_and_short_ones_ignored() -> None:
    custom = policy(context_words=["Acme", "ab"])
    assert rule_of(custom, "acme rocket skates forever") == "context"
    accepts(custom, "abstract glacier tango umbrella")
    accepts(custom, "my own idp passphrase is here")


def test_personal_reported_before_context() -> None:
    assert rule_of(policy(), "margaret openid quartz saturn", name="Margaret Hamilton") == "personal"


# --- composition (NIST §3.1.1.2, ASVS 6.2.5: off unless configured) ------------------------------------


def test_no_composition_rules_by_default() -> None:
    accepts(policy(), "glacier pancake orbit violin")


def test_composition_rule_when_configured() -> None:
    mixed = policy(required_character_classes=3)
    assert rule_of(mixed, "glacier pancake orbit violin") == "character_classes"
    assert rule_of(mixed, "GlacierPancakeOrbitViolin") == "character_classes"
    accepts(mixed, "Glacier Pancake Orbit Violin")  # a space counts as "other"
    accepts(mixed, "glacierpancake42orbitviolin!")


# --- strength ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "warning"),
    [
        ("aaaaaaaaaaaaaaaaaaaa", 'Repeats like "aaa" are easy to guess.'),
        ("abcdefghijklmnopq", 'Sequences like "abc" or "6543" are easy to guess.'),
    ],
)
def test_weak_password_refused_with_feedback(password: str, warning: str) -> None:
    with pytest.raises(PasswordRejected) as info:
        policy().check(password)
    assert info.value.rule == "weak"
    assert warning in info.value.message
    assert "Add another word or two" in info.value.message


def test_strength_off_accepts_weak_password() -> None:
    accepts(policy(min_strength=0), "aaaaaaaaaaaaaaaaaaaa")


def test_strong_passphrase_accepted_with_email_and_name() -> None:
    accepts(policy(), STRONG, email="ada.lovelace@example.com", name="Ada Lovelace", has_second_factor=False)


def test_strength_scores_at_most_100_characters_with_user_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list[str]]] = []
    real = password_policy.zxcvbn

    def spy(password: str, user_inputs: list[str], **kwargs: Any) -> Any:
        calls.append((password, user_inputs))
        return real(password, user_inputs=user_inputs, **kwargs)

    monkeypatch.setattr(password_policy, "zxcvbn", spy)
    long_password = (STRONG + " ") * 3 + "x" * 128
    long_password = long_password[:128]
    accepts(policy(), long_password, email="jane.doe@example.com", name="Grace Hopper")
    assert len(calls) == 1
    scored, inputs = calls[0]
    assert len(scored) == 100
    assert scored == long_password[:100]
    assert {"jane.doe@example.com", "jane.doe", "jane", "doe", "grace", "hopper", "idp", "openid"} <= set(inputs)


def test_strength_not_estimated_when_off(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("zxcvbn called with min_strength=0")

    monkeypatch.setattr(password_policy, "zxcvbn", fail)
    accepts(policy(min_strength=0), STRONG)


# --- the password itself is never altered (NIST §3.1.1.2, ASVS 6.2.8) ----------------------------------


def test_check_judges_without_altering_the_password() -> None:
    password = unicodedata.normalize("NFD", "Crème Brûlée Orbits Jupiter ") + "\uff21\uff22"  # fullwidth AB
    original = str(password)
    accepts(policy(), password)
    assert password == original
    assert unicodedata.is_normalized("NFD", password) is True  # still exactly as typed


# --- describe() ----------------------------------------------------------------------------------------


DESCRIBE_KEYS = {
    "min_length",
    "min_length_with_mfa",
    "max_length",
    "length_unit",
    "min_strength",
    "strength_estimator",
    "required_character_classes",
    "character_classes",
    "blocklist",
    "context",
}


def test_describe_has_stable_keys_and_settings_values() -> None:
    described = policy(
        min_length=16, min_length_with_mfa=10, max_length=256, min_strength=2, context_words=["Acme", "x"]
    ).describe()
    assert set(described) == DESCRIBE_KEYS
    assert described["min_length"] == 16
    assert described["min_length_with_mfa"] == 10
    assert described["max_length"] == 256
    assert described["min_strength"] == 2
    assert described["strength_estimator"] == "zxcvbn"
    assert described["blocklist"] == "Common and leaked passwords are refused."
    assert described["context"]["words"] == ["acme"]
    assert described["context"]["min_part_length"] == 3
    assert json.loads(json.dumps(described)) == described


def test_describe_defaults_have_no_composition_rules() -> None:
    described = policy().describe()
    assert set(described) == DESCRIBE_KEYS
    assert described["min_length"] == 15
    assert described["min_length_with_mfa"] == 8
    assert described["max_length"] == 128
    assert described["min_strength"] == 3
    assert described["required_character_classes"] == 0
    assert described["character_classes"] == []
    assert described["context"]["words"] == ["idp", "identity", "openid"]


def test_describe_lists_character_classes_when_configured() -> None:
    described = policy(required_character_classes=3, min_strength=0).describe()
    assert set(described) == DESCRIBE_KEYS
    assert described["required_character_classes"] == 3
    assert described["character_classes"] == ["lower", "upper", "digit", "other"]
    assert described["strength_estimator"] is None
