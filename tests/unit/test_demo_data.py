"""The demo's synthetic personal data has the shapes masking rules will look for."""

from __future__ import annotations

import random
import re
from datetime import date

from dbward.demo import card_number, customers, luhn_check_digit, luhn_is_valid, rrn, rrn_is_valid


def test_resident_registration_numbers_have_a_valid_check_digit() -> None:
    rng = random.Random(1)
    for _ in range(200):
        value = rrn(date(1990, 5, 17), female=True, rng=rng)
        assert re.fullmatch(r"900517-2\d{6}", value)
        assert rrn_is_valid(value)
    assert rrn(date(2001, 1, 2), female=False, rng=rng).startswith("010102-3")
    good = rrn(date(1985, 3, 3), female=False, rng=rng)
    bad = good[:-1] + str((int(good[-1]) + 1) % 10)
    assert not rrn_is_valid(bad)


def test_card_numbers_pass_the_luhn_check() -> None:
    assert luhn_is_valid("4111-1111-1111-1111")  # the classic test number
    assert luhn_check_digit("411111111111111") == 1
    assert not luhn_is_valid("4111-1111-1111-1112")
    rng = random.Random(2)
    for _ in range(200):
        n = card_number(rng)
        assert re.fullmatch(r"\d{4}-\d{4}-\d{4}-\d{4}", n) and luhn_is_valid(n)


def test_the_dataset_is_deterministic_and_mixed() -> None:
    people = customers()
    assert people == customers()
    assert len(people) == 40 and len({p.email for p in people}) == 40
    assert sum(1 for p in people if re.fullmatch(r"[가-힣]+", p.name)) == 20
    assert all(p.rrn is None or rrn_is_valid(p.rrn) for p in people)
    assert all(re.fullmatch(r"010-\d{4}-\d{4}|\+44 20 7946 \d{4}", p.phone) for p in people)
