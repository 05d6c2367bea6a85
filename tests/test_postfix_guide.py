"""docs/integrations/postfix.md is what the interop tests run (tests/peers/postfix.py).

These checks need no Postfix: the guide's marked blocks parse, each set-up is
complete (every map main.cf names has its block), the placeholders are all
replaced, and the private instance and the interop tests take their settings
from them. tests/test_interop.py then runs both set-ups against a real gateway.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.peers.postfix import (
    GUIDE,
    GUIDE_CONFIG_DIR,
    GUIDE_NEXT_HOP,
    GUIDE_PASSWORD,
    PostfixError,
    PostfixInstance,
    guide_blocks,
    guide_config,
    parse_main_cf,
)

REPO = Path(__file__).resolve().parent.parent
NEXT_HOP = "[127.0.0.1]:12525"
CONFIG_DIR = Path("/tmp/postfix-peer-x/etc")
SETUPS = ("all", "selective")


def test_the_guide_has_marked_blocks_for_both_setups() -> None:
    blocks = guide_blocks(GUIDE.read_text(encoding="utf-8"))
    files = {(file, setup) for file, setups, _ in blocks for setup in setups}
    assert ("main.cf", "all") in files and ("main.cf", "selective") in files
    assert (f"{GUIDE_CONFIG_DIR}sasl_passwd", "all") in files
    assert (f"{GUIDE_CONFIG_DIR}sasl_passwd", "selective") in files
    for file, _, content in blocks:
        if file == "main.cf":
            assert parse_main_cf(content), file
        else:  # every map file names the gateway
            assert GUIDE_NEXT_HOP in content, file


@pytest.mark.parametrize("setup", SETUPS)
def test_a_setup_is_complete_and_every_placeholder_is_replaced(setup: str) -> None:
    main_cf, maps = guide_config(setup, NEXT_HOP, CONFIG_DIR, "s3cret pass")
    text = "\n".join([*main_cf.values(), *maps.values()])
    for placeholder in (GUIDE_NEXT_HOP, GUIDE_CONFIG_DIR, GUIDE_PASSWORD, "relay.example.com"):
        assert placeholder not in text, placeholder
    # Every lookup table main.cf names is one of the guide's map blocks, and back.
    named = set(re.findall(rf"hash:{re.escape(str(CONFIG_DIR))}/(\w+)", " ".join(main_cf.values())))
    assert named == set(maps), (named, set(maps))
    assert maps["sasl_passwd"].split() == [NEXT_HOP, "acme:s3cret", "pass"]
    assert main_cf["smtp_sasl_auth_enable"] == "yes"
    if setup == "all":
        assert main_cf["relayhost"] == NEXT_HOP
        assert main_cf["smtp_tls_security_level"] == "encrypt"
    else:
        assert "relayhost" not in main_cf
        assert maps["tls_policy"].split() == [NEXT_HOP, "encrypt"]
        senders = [line.split() for line in maps["career_relay_senders"].splitlines()]
        assert senders and all(hop == NEXT_HOP for _, hop in senders)


@pytest.mark.parametrize("setup", SETUPS)
def test_the_private_instance_runs_the_guides_settings(setup: str, tmp_path: Path) -> None:
    base = tmp_path / "pf"
    main_cf, maps = guide_config(setup, NEXT_HOP, base.resolve() / "etc", "pw")
    instance = PostfixInstance(base, 10025, "[127.0.0.1]:12526", main_cf, maps)
    settings = instance.main_cf_settings()
    assert {k: settings[k] for k in main_cf} == main_cf
    assert instance.maps == maps
    # The test's own relayhost stays only where the guide does not set one.
    assert settings["relayhost"] == (NEXT_HOP if setup == "all" else "[127.0.0.1]:12526")


def test_the_instance_refuses_a_sender_map_that_leaves_loopback(tmp_path: Path) -> None:
    base = tmp_path / "pf"
    main_cf, maps = guide_config("selective", NEXT_HOP, base.resolve() / "etc", "pw")
    maps["career_relay_senders"] += "hr@acme.example [mail.example.com]:25\n"
    with pytest.raises(ValueError, match=r"loopback|look like"):
        PostfixInstance(base, 10025, "[127.0.0.1]:12526", main_cf, maps)


def test_the_interop_tests_use_both_setups() -> None:
    source = (REPO / "tests" / "test_interop.py").read_text(encoding="utf-8")
    for setup in SETUPS:
        assert f'guide_postfix("{setup}"' in source, setup
    assert "guide_setup=setup" in source


def test_bad_blocks_are_refused() -> None:
    with pytest.raises(PostfixError, match="unclosed"):
        guide_blocks("```ini main.cf setup=all\nrelayhost = x\n")
    with pytest.raises(PostfixError, match=r"not a main\.cf line"):
        parse_main_cf("relayhost [x]:25\n")
    with pytest.raises(PostfixError, match="set twice"):
        parse_main_cf("relayhost = a\nrelayhost = b\n")
    with pytest.raises(PostfixError, match=r"no main\.cf block"):
        guide_config("all", NEXT_HOP, CONFIG_DIR, "pw", text="no blocks here\n")
