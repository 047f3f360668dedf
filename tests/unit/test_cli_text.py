"""Small pieces of the command line's wording."""

from __future__ import annotations

from dbward.cli import client_hint, time_left


def test_migrate_states_the_time_left_in_words() -> None:
    assert time_left(None) == "estimating time left"
    assert time_left(42.4) == "about 42 s left"
    assert time_left(600) == "about 10 min left"
    assert time_left(2 * 3600 + 5 * 60 + 10) == "about 2 h 05 min left"


def test_the_banner_says_how_to_connect_with_each_client() -> None:
    assert (
        client_hint("postgres", "127.0.0.1", 25432, "hr", "alice")
        == 'psql "host=127.0.0.1 port=25432 dbname=hr user=alice"'
    )
    assert client_hint("mysql", "127.0.0.1", 23306, "shop") == "mysql -h 127.0.0.1 -P 23306 -u <user> -p shop"
